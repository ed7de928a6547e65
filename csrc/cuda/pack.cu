// CUDA packing kernels (see pack.cuh). One thread per group of 8 indices in a grid-stride loop
// (64-bit group numbers); the last partial group is done by one thread with byte accesses.
#include <string>

#include "device.cuh"
#include "groups.cuh"
#include "pack.cuh"

namespace wsq::cuda {
namespace {

constexpr int kThreads = 256;

bool is_index(int dt) { return dt == kU8 || dt == kU16 || dt == kI32 || dt == kI64; }
int index_size(int dt) { return dt == kU8 ? 1 : dt == kU16 ? 2 : dt == kI32 ? 4 : 8; }

// 8 consecutive indices from i (a multiple of 8); VEC: p + i is 8 * sizeof(T)-byte aligned.
template <int DT, bool VEC>
__device__ __forceinline__ void ld8_index(const void *p, int64_t i, int64_t v[8]) {
  using T = typename IndexType<DT>::T;
  const T *q = static_cast<const T *>(p) + i;
  if constexpr (VEC && DT == kU8) {
    const unsigned long long w = *reinterpret_cast<const unsigned long long *>(q);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v[j] = (w >> (8 * j)) & 0xffu;
  } else if constexpr (VEC && DT == kU16) {
    const uint4 w = *reinterpret_cast<const uint4 *>(q);
    const uint32_t a[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[2 * j] = a[j] & 0xffffu;
      v[2 * j + 1] = a[j] >> 16;
    }
  } else if constexpr (VEC && DT == kI32) {
    const int4 a = reinterpret_cast<const int4 *>(q)[0], b = reinterpret_cast<const int4 *>(q)[1];
    v[0] = a.x;
    v[1] = a.y;
    v[2] = a.z;
    v[3] = a.w;
    v[4] = b.x;
    v[5] = b.y;
    v[6] = b.z;
    v[7] = b.w;
  } else if constexpr (VEC && DT == kI64) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const longlong2 a = reinterpret_cast<const longlong2 *>(q)[j];
      v[2 * j] = a.x;
      v[2 * j + 1] = a.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v[j] = static_cast<int64_t>(q[j]);
  }
}

template <int DT, bool VEC>
__device__ __forceinline__ void st8_index(void *p, int64_t i, const uint32_t v[8]) {
  using T = typename IndexType<DT>::T;
  T *q = static_cast<T *>(p) + i;
  if constexpr (VEC && DT == kU8) {
    unsigned long long w = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      w |= static_cast<unsigned long long>(v[j]) << (8 * j);
    *reinterpret_cast<unsigned long long *>(q) = w;
  } else if constexpr (VEC && DT == kU16) {
    *reinterpret_cast<uint4 *>(q) = make_uint4(v[0] | (v[1] << 16), v[2] | (v[3] << 16),
                                               v[4] | (v[5] << 16), v[6] | (v[7] << 16));
  } else if constexpr (VEC && DT == kI32) {
    reinterpret_cast<uint4 *>(q)[0] = make_uint4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<uint4 *>(q)[1] = make_uint4(v[4], v[5], v[6], v[7]);
  } else if constexpr (VEC && DT == kI64) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      reinterpret_cast<longlong2 *>(q)[j] = make_longlong2(v[2 * j], v[2 * j + 1]);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      q[j] = static_cast<T>(v[j]);
  }
}

__device__ __forceinline__ uint32_t valid_or_zero(int64_t v, int bits) {
  return (v >= 0 && v < (int64_t{1} << bits)) ? static_cast<uint32_t>(v) : 0u;
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(kThreads)
    pack_kernel(const void *idx, int64_t n, int bits, uint8_t *out, int unit) {
  using T = typename IndexType<DT>::T;
  const int64_t groups = n / 8;
  for (int64_t g = gtid(); g < groups; g += gstride()) {
    int64_t v[8];
    ld8_index<DT, VEC>(idx, g * 8, v);
    Group r{0, 0};
#pragma unroll
    for (int j = 0; j < 8; ++j)
      group_put(&r, j, bits, valid_or_zero(v[j], bits));
    store_group(out, g, bits, unit, r);
  }
  if (gtid() == 0 && groups * 8 < n) {
    const T *q = static_cast<const T *>(idx);
    Group r{0, 0};
    for (int j = 0; groups * 8 + j < n; ++j)
      group_put(&r, j, bits, valid_or_zero(static_cast<int64_t>(q[groups * 8 + j]), bits));
    const int64_t nb = packed_bytes(n, bits) - groups * bits;
    group_to_bytes(r, out + groups * bits, static_cast<int>(nb));
  }
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(kThreads)
    unpack_kernel(const uint8_t *in, int64_t nbytes, int64_t n, int bits, void *out, int unit) {
  using T = typename IndexType<DT>::T;
  const int64_t groups = n / 8;
  for (int64_t g = gtid(); g < groups; g += gstride()) {
    const Group r = load_group(in, g, bits, unit);
    uint32_t v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v[j] = group_get(r, j, bits);
    st8_index<DT, VEC>(out, g * 8, v);
  }
  if (gtid() == 0 && groups * 8 < n) {
    const Group r = load_tail(in, groups, bits, nbytes - groups * bits);
    for (int j = 0; groups * 8 + j < n; ++j)
      static_cast<T *>(out)[groups * 8 + j] = static_cast<T>(group_get(r, j, bits));
  }
}

// The table lives in shared memory (masked to bits_out, 0 past its length) when it is small.
constexpr int kRemapSmem = 8192;

__global__ void __launch_bounds__(kThreads)
    remap_kernel(const uint8_t *in, int64_t nbytes, int64_t n, int bits_in, const int32_t *table,
                 int64_t tn, uint8_t *out, int bits_out, int unit_in, int unit_out, bool smem) {
  extern __shared__ uint32_t tab[];
  const uint32_t omask = (1u << bits_out) - 1u;
  if (smem) {
    for (int j = threadIdx.x; j < (1 << bits_in); j += blockDim.x)
      tab[j] = j < tn ? static_cast<uint32_t>(table[j]) & omask : 0u;
    __syncthreads();
  }
  auto map = [&](uint32_t v) -> uint32_t {
    if (smem)
      return tab[v];
    return v < tn ? static_cast<uint32_t>(__ldg(table + v)) & omask : 0u;
  };
  const int64_t groups = n / 8;
  for (int64_t g = gtid(); g < groups; g += gstride()) {
    const Group a = load_group(in, g, bits_in, unit_in);
    Group b{0, 0};
#pragma unroll
    for (int j = 0; j < 8; ++j)
      group_put(&b, j, bits_out, map(group_get(a, j, bits_in)));
    store_group(out, g, bits_out, unit_out, b);
  }
  if (gtid() == 0 && groups * 8 < n) {
    const Group a = load_tail(in, groups, bits_in, nbytes - groups * bits_in);
    Group b{0, 0};
    for (int j = 0; groups * 8 + j < n; ++j)
      group_put(&b, j, bits_out, map(group_get(a, j, bits_in)));
    group_to_bytes(b, out + groups * bits_out,
                   static_cast<int>(packed_bytes(n, bits_out) - groups * bits_out));
  }
}

void check_bits(int bits, const char *name) {
  check(bits >= 1 && bits <= 16,
        std::string(name) + " must be in 1..16, got " + std::to_string(bits));
}

int groups_grid(int64_t n) { return grid_for((n + 7) / 8, kThreads, 8); }

} // namespace

void pack(const void *idx, int64_t n, int idx_dtype, int bits, uint8_t *out,
          std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_index(idx_dtype),
        "idx_dtype must be uint8/uint16/int32/int64, got code " + std::to_string(idx_dtype));
  check_bits(bits, "bits");
  if (n == 0)
    return;
  check(idx != nullptr && out != nullptr, "pack: null pointer");
  const bool vec = aligned(idx, 8 * index_size(idx_dtype) < 16 ? 8 * index_size(idx_dtype) : 16);
  const int unit = group_unit(out, bits);
  cudaStream_t s = as_stream(stream);
  WSQ_INDEX_SWITCH(idx_dtype, DT, [&] {
    WSQ_BOOL_SWITCH(vec, VEC, [&] {
      pack_kernel<DT, VEC><<<groups_grid(n), kThreads, 0, s>>>(idx, n, bits, out, unit);
    });
  });
  check_launch("pack_kernel launch");
}

void unpack(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, void *out, int out_dtype,
            std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits, "bits");
  check(is_index(out_dtype),
        "out_dtype must be uint8/uint16/int32/int64, got code " + std::to_string(out_dtype));
  check(out_dtype != kU8 || bits <= 8,
        "out_dtype uint8 cannot hold " + std::to_string(bits) + "-bit indices");
  check(nbytes >= packed_bytes(n, bits), "packed holds " + std::to_string(nbytes) + " bytes; " +
                                             std::to_string(n) + " indices need " +
                                             std::to_string(packed_bytes(n, bits)));
  if (n == 0)
    return;
  check(packed != nullptr && out != nullptr, "unpack: null pointer");
  const bool vec = aligned(out, 8 * index_size(out_dtype) < 16 ? 8 * index_size(out_dtype) : 16);
  const int unit = group_unit(packed, bits);
  cudaStream_t s = as_stream(stream);
  WSQ_INDEX_SWITCH(out_dtype, DT, [&] {
    WSQ_BOOL_SWITCH(vec, VEC, [&] {
      unpack_kernel<DT, VEC>
          <<<groups_grid(n), kThreads, 0, s>>>(packed, nbytes, n, bits, out, unit);
    });
  });
  check_launch("unpack_kernel launch");
}

void remap_packed(const uint8_t *in, int64_t nbytes_in, int64_t n, int bits_in,
                  const int32_t *table, int64_t table_len, uint8_t *out, int bits_out,
                  std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits_in, "bits_in");
  check_bits(bits_out, "bits_out");
  check(table_len >= 1, "table must not be empty");
  check(nbytes_in >= packed_bytes(n, bits_in),
        "packed holds " + std::to_string(nbytes_in) + " bytes; " + std::to_string(n) +
            " indices need " + std::to_string(packed_bytes(n, bits_in)));
  if (n == 0)
    return;
  check(in != nullptr && table != nullptr && out != nullptr, "remap_packed: null pointer");
  const bool smem = (1 << bits_in) <= kRemapSmem;
  cudaStream_t s = as_stream(stream);
  remap_kernel<<<groups_grid(n), kThreads, smem ? 4 << bits_in : 0, s>>>(
      in, nbytes_in, n, bits_in, table, table_len, out, bits_out, group_unit(in, bits_in),
      group_unit(out, bits_out), smem);
  check_launch("remap_kernel launch");
}

} // namespace wsq::cuda
