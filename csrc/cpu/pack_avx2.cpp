// AVX2 pack / unpack / remap range kernels, one group (8 indices = B bytes) per 256-bit vector in
// 32-bit lanes: vpshufb gathers the 3-4 bytes holding each index into its lane, vpsrlvd aligns it;
// encoding is an OR tree (pairs in 64-bit lanes, quads in 128-bit lanes, the two lanes).
// Bit-identical to the scalar kernels in pack.cpp, which also finish the few groups at the end of
// each range where a 16-byte access would cross the range's edge.
#include "pack.h"
#include "pack_codec.h" // before the target pragma (see pack_codec.h)

#if defined(__x86_64__) || defined(__i386__)
// GCC 12 flags the intrinsics' own _mm*_undefined_* self-initialisation when inlined at -O3
// (GCC bug 105593, fixed in 13): silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>

#pragma GCC push_options
#pragma GCC target("avx2,fma,popcnt")

namespace wsq {
namespace pack_detail {
namespace {

template <class T> inline __m128i load128(const T *p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}
template <class T> inline __m256i load256(const T *p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
}
template <class T> inline void store128(T *p, __m128i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p), v);
}
template <class T> inline void store256(T *p, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v);
}

template <class T> constexpr int dti_of() {
  return sizeof(T) == 1 ? 0 : sizeof(T) == 2 ? 1 : sizeof(T) == 4 ? 2 : 3;
}

// Bytes a group's decode reads / encode writes from its start, and the groups that must remain.
constexpr int extent(int b) { return b == 8 || b == 16 ? b : 16; }
constexpr int need(int b) { return (extent(b) + b - 1) / b; }

template <int B> struct Decoder {
  __m256i ctrl, shift, mask;
  Decoder() {
    alignas(32) uint8_t c[32];
    alignas(32) uint32_t s[8];
    for (int e = 0; e < 8; ++e) {
      const int bit = e * B, byte = bit >> 3;
      s[e] = static_cast<uint32_t>(bit & 7);
      for (int j = 0; j < 4; ++j)
        c[4 * e + j] = static_cast<uint8_t>(byte + j < 16 ? byte + j : 0x80);
    }
    ctrl = _mm256_load_si256(reinterpret_cast<const __m256i *>(c));
    shift = _mm256_load_si256(reinterpret_cast<const __m256i *>(s));
    mask = _mm256_set1_epi32((1 << B) - 1);
  }
  inline __m256i operator()(const uint8_t *p) const {
    if constexpr (B == 8) {
      return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
    } else if constexpr (B == 16) {
      return _mm256_cvtepu16_epi32(load128(p));
    } else {
      const __m256i z = _mm256_broadcastsi128_si256(load128(p));
      return _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(z, ctrl), shift), mask);
    }
  }
};

// Low byte / low word of each 32-bit lane, compacted within each 128-bit lane.
inline __m256i bytes_of_dwords() {
  return _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
}
inline __m256i words_of_dwords() {
  return _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, //
                          0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
}

template <int B> struct Encoder {
  __m256i m32, sel;
  Encoder() {
    m32 = _mm256_set1_epi64x(0xFFFFFFFFll);
    sel = B == 8 ? bytes_of_dwords() : words_of_dwords();
  }
  // 8 indices (each < 2^B) -> B bytes at q; writes extent(B) bytes, zero past B.
  inline void operator()(__m256i v, uint8_t *q) const {
    if constexpr (B == 8) {
      const __m256i b = _mm256_shuffle_epi8(v, sel); // 4 bytes at the start of each lane
      const __m256i d = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
      _mm_storel_epi64(reinterpret_cast<__m128i *>(q), _mm256_castsi256_si128(d));
    } else if constexpr (B == 16) {
      const __m256i w = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, sel), 0x08);
      store128(q, _mm256_castsi256_si128(w));
    } else {
      __m256i x = _mm256_and_si256(_mm256_or_si256(v, _mm256_srli_epi64(v, 32 - B)), m32);
      x = _mm256_or_si256(x, _mm256_slli_epi64(_mm256_bsrli_epi128(x, 8), 2 * B));
      const __m256i h = _mm256_permute4x64_epi64(x, 0xAA); // lane 1's low qword everywhere
      const __m256i r = _mm256_blend_epi32(_mm256_or_si256(x, _mm256_slli_epi64(h, 4 * B)),
                                           _mm256_srli_epi64(h, 64 - 4 * B), 0x0C);
      store128(q, _mm256_castsi256_si128(r));
    }
  }
};

// 8 indices of type T as 32-bit lanes (low B bits), counting values < 0 or >= 2^B.
template <class T, int B> inline __m256i load_dwords(const T *s, int64_t &bad) {
  __m256i v;
  if constexpr (sizeof(T) == 8) {
    const __m256i a = load256(s), b = load256(s + 4);
    const __m256i z = _mm256_setzero_si256();
    const int ok =
        _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_srli_epi64(a, B), z))) |
        _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_srli_epi64(b, B), z)))
            << 4;
    bad += 8 - _mm_popcnt_u32(static_cast<unsigned>(ok));
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    v = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(a, even),
                                  _mm256_permutevar8x32_epi32(b, even), 0x20);
  } else {
    if constexpr (sizeof(T) == 1) {
      v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(s)));
    } else if constexpr (sizeof(T) == 2) {
      v = _mm256_cvtepu16_epi32(load128(s));
    } else {
      v = load256(s);
    }
    if constexpr (sizeof(T) * 8 > B || std::is_signed_v<T>) {
      const __m256i hi = _mm256_srli_epi32(v, B);
      const int ok =
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(hi, _mm256_setzero_si256())));
      bad += 8 - _mm_popcnt_u32(static_cast<unsigned>(ok));
    }
  }
  return _mm256_and_si256(v, _mm256_set1_epi32((1 << B) - 1));
}

template <class T, int B>
int64_t pack_range(const void *idx, uint8_t *out, int64_t g0, int64_t g1) {
  const T *x = static_cast<const T *>(idx);
  if constexpr ((std::is_same_v<T, uint8_t> && B == 8) ||
                (std::is_same_v<T, uint16_t> && B == 16)) {
    std::memcpy(out + g0 * B, x + g0 * 8, static_cast<size_t>((g1 - g0) * B));
    return 0;
  } else {
    const Encoder<B> enc;
    int64_t bad = 0, g = g0;
    for (; g + need(B) <= g1; ++g)
      enc(load_dwords<T, B>(x + g * 8, bad), out + g * B);
    return bad + pack_scalar(dti_of<T>(), B)(idx, out, g, g1);
  }
}

template <class T, int B> void unpack_range(const uint8_t *in, void *out, int64_t g0, int64_t g1) {
  T *y = static_cast<T *>(out);
  if constexpr ((sizeof(T) == 1 && B == 8) || (sizeof(T) == 2 && B == 16)) {
    std::memcpy(y + g0 * 8, in + g0 * B, static_cast<size_t>((g1 - g0) * B));
  } else {
    const Decoder<B> dec;
    const __m256i bsel = bytes_of_dwords(), wsel = words_of_dwords();
    int64_t g = g0;
    for (; g + need(B) <= g1; ++g) {
      const __m256i v = dec(in + g * B);
      T *d = y + g * 8;
      if constexpr (sizeof(T) == 1) {
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, bsel),
                                                      _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        _mm_storel_epi64(reinterpret_cast<__m128i *>(d), _mm256_castsi256_si128(b));
      } else if constexpr (sizeof(T) == 2) {
        store128(d, _mm256_castsi256_si128(
                        _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, wsel), 0x08)));
      } else if constexpr (sizeof(T) == 4) {
        store256(d, v);
      } else {
        store256(d, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(v)));
        store256(d + 4, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(v, 1)));
      }
    }
    unpack_scalar(dti_of<T>(), B)(in, out, g, g1);
  }
}

// BI = BO in {1, 2, 4}: a byte -> byte map applied a nibble at a time with vpshufb (see the AVX-512
// twin in pack_avx512.cpp), 32 bytes per step, the last step through a 32-byte buffer.
template <int B>
int64_t remap_nibbles(const uint8_t *in, uint8_t *out, const uint32_t *tbl, int64_t len, int64_t g0,
                      int64_t g1) {
  alignas(16) uint8_t map[16], nbad[16];
  for (int x = 0; x < 16; ++x) {
    map[x] = nbad[x] = 0;
    for (int j = 0; j < 4 / B; ++j) {
      const uint32_t e = (x >> (j * B)) & ((1 << B) - 1);
      map[x] = static_cast<uint8_t>(map[x] | tbl[e] << (j * B));
      nbad[x] = static_cast<uint8_t>(nbad[x] + (e >= len));
    }
  }
  const __m256i tlo = _mm256_broadcastsi128_si256(load128(map));
  const __m256i thi = _mm256_slli_epi16(tlo, 4);
  const __m256i tbad = _mm256_broadcastsi128_si256(load128(nbad));
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256i acc = _mm256_setzero_si256();
  const int64_t end = g1 * B;
  for (int64_t i = g0 * B; i < end; i += 32) {
    const bool full = end - i >= 32;
    alignas(32) uint8_t buf[32] = {0}; // index 0 is never bad (len >= 1): zero padding is safe
    if (!full)
      std::memcpy(buf, in + i, static_cast<size_t>(end - i));
    const __m256i x = full ? load256(in + i) : load256(buf);
    const __m256i lo = _mm256_and_si256(x, low4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
    const __m256i y = _mm256_or_si256(_mm256_shuffle_epi8(tlo, lo), _mm256_shuffle_epi8(thi, hi));
    const __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(tbad, lo), _mm256_shuffle_epi8(tbad, hi));
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(c, _mm256_setzero_si256()));
    if (full) {
      store256(out + i, y);
    } else {
      store256(buf, y);
      std::memcpy(out + i, buf, static_cast<size_t>(end - i));
    }
  }
  alignas(32) int64_t s[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(s), acc);
  return s[0] + s[1] + s[2] + s[3];
}

// Table lookup: up to 16 entries from registers (vpermd, plus a blend on index bit 3), larger
// tables by vpgatherdd from the padded table.
template <int BI> struct Lut {
  __m256i t0, t1;
  const uint32_t *tbl;
  explicit Lut(const uint32_t *t) : tbl(t) {
    alignas(32) uint32_t pad[16] = {0};
    std::memcpy(pad, t, sizeof(uint32_t) * std::min(16, 1 << BI));
    t0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(pad));
    t1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(pad + 8));
  }
  inline __m256i operator()(__m256i v) const {
    if constexpr (BI <= 3) {
      return _mm256_permutevar8x32_epi32(t0, v);
    } else if constexpr (BI == 4) {
      const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)); // bit 3 -> sign bit
      return _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t0, v)),
                           _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t1, v)), hi));
    } else {
      return _mm256_i32gather_epi32(reinterpret_cast<const int *>(tbl), v, 4);
    }
  }
};

template <int BI, int BO>
int64_t remap_range(const uint8_t *in, uint8_t *out, const uint32_t *tbl, int64_t len, int64_t g0,
                    int64_t g1) {
  if constexpr (BI == BO && (BI == 1 || BI == 2 || BI == 4)) {
    return remap_nibbles<BI>(in, out, tbl, len, g0, g1);
  } else {
    const Decoder<BI> dec;
    const Encoder<BO> enc;
    const Lut<BI> lut(tbl);
    // indices are < 2^16, so a signed compare against lim - 1 is exact
    const __m256i lim =
        _mm256_set1_epi32(static_cast<int>(std::min<int64_t>(len, int64_t{1} << BI)) - 1);
    int64_t bad = 0, g = g0;
    for (; g + std::max(need(BI), need(BO)) <= g1; ++g) {
      const __m256i v = dec(in + g * BI);
      bad += _mm_popcnt_u32(static_cast<unsigned>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, lim)))));
      enc(lut(v), out + g * BO);
    }
    return bad + remap_scalar(BI, BO)(in, out, tbl, len, g, g1);
  }
}

} // namespace

PackFn pack_avx2(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> PackFn { return &pack_range<decltype(t), decltype(b)::value>; });
  });
}

UnpackFn unpack_avx2(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> UnpackFn { return &unpack_range<decltype(t), decltype(b)::value>; });
  });
}

RemapFn remap_avx2(int bits_in, int bits_out) {
  return bits_switch(bits_in, [&](auto bi) {
    return bits_switch(bits_out, [&](auto bo) -> RemapFn {
      return &remap_range<decltype(bi)::value, decltype(bo)::value>;
    });
  });
}

} // namespace pack_detail
} // namespace wsq

#pragma GCC pop_options

#else // not x86: the dispatcher never asks for these, but the symbols must exist
namespace wsq {
namespace pack_detail {
PackFn pack_avx2(int, int) { return nullptr; }
UnpackFn unpack_avx2(int, int) { return nullptr; }
RemapFn remap_avx2(int, int) { return nullptr; }
} // namespace pack_detail
} // namespace wsq
#endif
