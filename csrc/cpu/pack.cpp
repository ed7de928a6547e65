// Bit packing: argument checks, OpenMP orchestration, the last partial group, and the scalar range
// kernels (the baseline the AVX2 / AVX-512 kernels in pack_avx*.cpp match bit for bit).
#include "pack.h"

#include <omp.h>

#include <algorithm>
#include <cmath> // common.h uses floorf without including it
#include <string>
#include <vector>

#include "../common.h"
#include "cpu_features.h"
#include "pack_codec.h"

namespace wsq {
namespace pack_detail {
namespace {

// Casting to uint64 sends negative values of the signed dtypes far above 2^16, so one shift tells
// "negative or >= 2^B" for every dtype.
template <class T, int B>
int64_t pack_range(const void *idx, uint8_t *out, int64_t g0, int64_t g1) {
  const T *x = static_cast<const T *>(idx);
  int64_t bad = 0;
  for (int64_t g = g0; g < g1; ++g) {
    uint32_t v[8];
    const T *s = x + g * 8;
    for (int i = 0; i < 8; ++i) {
      const uint64_t u = static_cast<uint64_t>(s[i]);
      bad += (u >> B) != 0;
      v[i] = static_cast<uint32_t>(u) & ((1u << B) - 1u);
    }
    encode_group<B>(v, out + g * B);
  }
  return bad;
}

template <class T, int B> void unpack_range(const uint8_t *in, void *out, int64_t g0, int64_t g1) {
  T *y = static_cast<T *>(out);
  for (int64_t g = g0; g < g1; ++g) {
    uint32_t v[8];
    decode_group<B>(in + g * B, v);
    for (int i = 0; i < 8; ++i)
      y[g * 8 + i] = static_cast<T>(v[i]);
  }
}

template <int BI, int BO>
int64_t remap_range(const uint8_t *in, uint8_t *out, const uint32_t *tbl, int64_t len, int64_t g0,
                    int64_t g1) {
  int64_t bad = 0;
  for (int64_t g = g0; g < g1; ++g) {
    uint32_t v[8];
    decode_group<BI>(in + g * BI, v);
    for (int i = 0; i < 8; ++i) {
      bad += static_cast<int64_t>(v[i]) >= len;
      v[i] = tbl[v[i]]; // tbl has 2^BI entries: never out of bounds
    }
    encode_group<BO>(v, out + g * BO);
  }
  return bad;
}

} // namespace

PackFn pack_scalar(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> PackFn { return &pack_range<decltype(t), decltype(b)::value>; });
  });
}

UnpackFn unpack_scalar(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> UnpackFn { return &unpack_range<decltype(t), decltype(b)::value>; });
  });
}

RemapFn remap_scalar(int bits_in, int bits_out) {
  return bits_switch(bits_in, [&](auto bi) {
    return bits_switch(bits_out, [&](auto bo) -> RemapFn {
      return &remap_range<decltype(bi)::value, decltype(bo)::value>;
    });
  });
}

namespace {

int dtype_index(int dt, const char *name) {
  switch (dt) {
  case kU8:
    return 0;
  case kU16:
    return 1;
  case kI32:
    return 2;
  case kI64:
    return 3;
  default:
    throw std::invalid_argument(std::string(name) + ": index dtype code must be u8, u16, i32 or " +
                                "i64, got " + std::to_string(dt));
  }
}

void check_bits(int bits, const char *name) {
  check(bits >= 1 && bits <= 16,
        std::string(name) + " must be in 1..16, got " + std::to_string(bits));
}

// Picks the best kernel the active ISA level has for this case.
template <class Fn, class... A>
Fn choose(Fn (*f512)(A...), Fn (*f2)(A...), Fn (*f1)(A...), A... a) {
  const Isa isa = active_isa();
  Fn fn = nullptr;
  if (isa >= Isa::kAvx512)
    fn = f512(a...);
  if (!fn && isa >= Isa::kAvx2)
    fn = f2(a...);
  return fn ? fn : f1(a...);
}

// Runs f(g0, g1) over [0, groups) split into one contiguous chunk per thread. Chunks are whole
// groups, so no two threads touch the same input or output byte. Small inputs stay on one thread:
// waking the team costs more than it saves below ~100K indices.
template <class F> int64_t parallel_groups(int64_t groups, F &&f) {
  constexpr int64_t kMinGroups = 1 << 14;
  const int64_t chunks = std::min<int64_t>(omp_get_max_threads(), groups / kMinGroups);
  if (chunks <= 1)
    return groups > 0 ? f(int64_t{0}, groups) : 0;
  const int64_t base = groups / chunks, extra = groups % chunks;
  int64_t bad = 0;
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static) reduction(+ : bad)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t g0 = c * base + std::min(c, extra);
    const int64_t g1 = g0 + base + (c < extra ? 1 : 0);
    bad += f(g0, g1);
  }
  return bad;
}

} // namespace
} // namespace pack_detail

using namespace pack_detail;

int64_t pack(const void *idx, int64_t n, int idx_dtype, int bits, uint8_t *out) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits, "bits");
  const int dti = dtype_index(idx_dtype, "indices");
  if (n == 0)
    return 0;
  const PackFn fn = choose(&pack_avx512, &pack_avx2, &pack_scalar, dti, bits);
  const int64_t groups = n / 8;
  int64_t bad =
      parallel_groups(groups, [&](int64_t g0, int64_t g1) { return fn(idx, out, g0, g1); });
  const int r = static_cast<int>(n % 8);
  if (r) {
    uint32_t v[8];
    bad += dtype_switch(dti, [&](auto t) {
      using T = decltype(t);
      const T *s = static_cast<const T *>(idx) + groups * 8;
      int64_t b = 0;
      for (int i = 0; i < r; ++i) {
        const uint64_t u = static_cast<uint64_t>(s[i]);
        b += (u >> bits) != 0;
        v[i] = static_cast<uint32_t>(u) & ((1u << bits) - 1u);
      }
      return b;
    });
    encode_partial(v, r, bits, out + groups * bits, packed_bytes(n, bits) - groups * bits);
  }
  return bad;
}

void unpack(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, void *out, int out_dtype) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits, "bits");
  const int dti = dtype_index(out_dtype, "out");
  check(nbytes == packed_bytes(n, bits),
        "packed holds " + std::to_string(nbytes) + " bytes; " + std::to_string(n) + " indices at " +
            std::to_string(bits) + " bits need " + std::to_string(packed_bytes(n, bits)));
  if (n == 0)
    return;
  const UnpackFn fn = choose(&unpack_avx512, &unpack_avx2, &unpack_scalar, dti, bits);
  const int64_t groups = n / 8;
  parallel_groups(groups, [&](int64_t g0, int64_t g1) {
    fn(packed, out, g0, g1);
    return int64_t{0};
  });
  const int r = static_cast<int>(n % 8);
  if (r) {
    uint32_t v[8];
    decode_partial(packed + groups * bits, nbytes - groups * bits, bits, r, v);
    dtype_switch(dti, [&](auto t) {
      using T = decltype(t);
      for (int i = 0; i < r; ++i)
        static_cast<T *>(out)[groups * 8 + i] = static_cast<T>(v[i]);
      return 0;
    });
  }
}

int64_t remap_packed(const uint8_t *in, int64_t nbytes_in, int64_t n, int bits_in,
                     const int32_t *table, int64_t table_len, uint8_t *out, int bits_out) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits_in, "bits_in");
  check_bits(bits_out, "bits_out");
  check(table_len >= 1, "table is empty");
  check(nbytes_in == packed_bytes(n, bits_in), "packed holds " + std::to_string(nbytes_in) +
                                                   " bytes; " + std::to_string(n) + " indices at " +
                                                   std::to_string(bits_in) + " bits need " +
                                                   std::to_string(packed_bytes(n, bits_in)));
  if (n == 0)
    return 0;
  // Padded to every possible input value, so no index can read past it; entries past table_len
  // are 0 and the indices that hit them are counted as bad.
  const int64_t full = int64_t{1} << bits_in;
  const uint32_t omask = (1u << bits_out) - 1u;
  std::vector<uint32_t> tbl(static_cast<size_t>(full), 0u);
  for (int64_t i = 0; i < std::min(table_len, full); ++i)
    tbl[i] = static_cast<uint32_t>(table[i]) & omask;
  const RemapFn fn = choose(&remap_avx512, &remap_avx2, &remap_scalar, bits_in, bits_out);
  const int64_t groups = n / 8;
  int64_t bad = parallel_groups(
      groups, [&](int64_t g0, int64_t g1) { return fn(in, out, tbl.data(), table_len, g0, g1); });
  const int r = static_cast<int>(n % 8);
  if (r) {
    uint32_t v[8];
    decode_partial(in + groups * bits_in, nbytes_in - groups * bits_in, bits_in, r, v);
    for (int i = 0; i < r; ++i) {
      bad += static_cast<int64_t>(v[i]) >= table_len;
      v[i] = tbl[v[i]];
    }
    encode_partial(v, r, bits_out, out + groups * bits_out,
                   packed_bytes(n, bits_out) - groups * bits_out);
  }
  return bad;
}

} // namespace wsq
