// AVX-512 (F + BW + VL) codec for groups of packed indices, shared by pack_avx512.cpp (pack,
// unpack and remap). Include it only after
//   #pragma GCC target("avx512f,avx512bw,avx512vl,popcnt")
// Everything here has internal linkage, so no AVX-512 copy of a function can stand in for a
// baseline one at link time.
//
// Work unit: 32 indices = 4 groups = 4*B bytes, in 16-bit lanes with one group per 128-bit lane.
// Decoding: vpshufb gathers the two bytes holding each index into its lane and vpsrlvw aligns it
// (B <= 9; wider indices are decoded the same way in 32-bit lanes, one group per 256-bit half).
// Encoding: an OR tree, pairs into 32-bit lanes, quads into 64-bit lanes, the group into its
// 128-bit lane. Each codec reads / writes a few bytes past its 4*B (the extents below); callers
// keep that much of their range ahead of them and leave the rest to the scalar kernels.
#pragma once
// GCC 12 flags the intrinsics' own _mm*_undefined_* self-initialisation when inlined at -O3
// (GCC bug 105593, fixed in 13): silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

namespace wsq {
namespace pack_detail {
namespace {

template <class T> inline __m128i load128(const T *p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}
template <class T> inline __m256i load256(const T *p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
}
template <class T> inline __m512i load512(const T *p) {
  return _mm512_loadu_si512(reinterpret_cast<const void *>(p));
}
template <class T> inline void store128(T *p, __m128i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p), v);
}
template <class T> inline void store256(T *p, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v);
}
template <class T> inline void store512(T *p, __m512i v) {
  _mm512_storeu_si512(reinterpret_cast<void *>(p), v);
}

inline __m256i lo256(__m512i v) { return _mm512_castsi512_si256(v); }
inline __m256i hi256(__m512i v) { return _mm512_extracti64x4_epi64(v, 1); }

// 32 indices: 32-bit lanes (two vectors) -> 16-bit lanes (one vector); values must be < 2^16.
struct Dwords {
  __m512i a, b; // indices 0..15, 16..31
};
inline __m512i to_words(Dwords d) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(d.a)),
                            _mm512_cvtepi32_epi16(d.b), 1);
}

// Bytes past the block start that the 32-index decoder reads / encoder writes.
constexpr int dec_extent(int b) {
  return (b == 1 || b == 2 || b == 8 || b == 16) ? 4 * b : b <= 4 ? 16 : 3 * b + 16;
}
constexpr int enc_extent(int b) {
  return (b == 1 || b == 2 || b == 4 || b == 8 || b == 16) ? 4 * b
         : b == 3                                          ? 16
         : b < 8                                           ? 3 * b + 8
                                                           : 3 * b + 16;
}
// Groups a block at g needs in [g, g1) so that neither side leaves the range.
constexpr int groups_needed(int bi, int bo) {
  const int a = (dec_extent(bi) + bi - 1) / bi, b = (enc_extent(bo) + bo - 1) / bo;
  return a > b ? a : b;
}

// ---- 16-bit lanes, one group per 128-bit lane -------------------------------------------------

template <int B> struct WordDecoder {
  static_assert(B <= 9, "a 16-bit lane holds shift + B <= 16 bits only for B <= 9");
  // At B <= 4 all four groups lie in one 16-byte window, broadcast to every lane; wider groups get
  // a window each.
  static constexpr bool kOneWindow = B <= 4;
  __m512i ctrl, shift, mask;
  WordDecoder() {
    alignas(64) uint8_t c[64];
    alignas(64) uint16_t s[32];
    for (int e = 0; e < 32; ++e) {
      const int bit = (kOneWindow ? e : e % 8) * B, byte = bit >> 3;
      s[e] = static_cast<uint16_t>(bit & 7);
      c[2 * e] = static_cast<uint8_t>(byte);
      c[2 * e + 1] = static_cast<uint8_t>(byte + 1 < 16 ? byte + 1 : 0x80);
    }
    ctrl = _mm512_load_si512(c);
    shift = _mm512_load_si512(s);
    mask = _mm512_set1_epi16(static_cast<int16_t>((1 << B) - 1));
  }
  inline __m512i operator()(const uint8_t *p) const {
    if constexpr (B == 8) {
      return _mm512_cvtepu8_epi16(load256(p));
    } else {
      __m512i z;
      if constexpr (B == 1) {
        int v;
        std::memcpy(&v, p, 4);
        z = _mm512_broadcast_i32x4(_mm_cvtsi32_si128(v));
      } else if constexpr (B == 2) {
        z = _mm512_broadcast_i32x4(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
      } else if constexpr (kOneWindow) {
        z = _mm512_broadcast_i32x4(load128(p));
      } else {
        z = _mm512_broadcast_i32x4(load128(p));
        z = _mm512_mask_broadcast_i32x4(z, 0x00F0, load128(p + B));
        z = _mm512_mask_broadcast_i32x4(z, 0x0F00, load128(p + 2 * B));
        z = _mm512_mask_broadcast_i32x4(z, 0xF000, load128(p + 3 * B));
      }
      z = _mm512_srlv_epi16(_mm512_shuffle_epi8(z, ctrl), shift);
      return _mm512_and_si512(z, mask);
    }
  }
};

template <int B> struct WordEncoder {
  __m512i m16, m32, sel, sel3;
  __m128i pack3;
  WordEncoder() {
    m16 = _mm512_set1_epi32(0xFFFF);
    m32 = _mm512_set1_epi64(0xFFFFFFFFll);
    sel = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    sel3 = _mm512_set_epi32(15, 14, 13, 11, 10, 9, 7, 6, 5, 3, 2, 1, 12, 8, 4, 0);
    pack3 = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  }
  // Four B-byte groups (B < 8, one per 64-bit lane of g) -> 4*B contiguous bytes at q.
  static inline void store_groups(__m256i g, uint8_t *q) {
    if constexpr (B == 1) {
      const int v = _mm_cvtsi128_si32(_mm256_cvtepi64_epi8(g));
      std::memcpy(q, &v, 4);
    } else if constexpr (B == 2) {
      _mm_storel_epi64(reinterpret_cast<__m128i *>(q), _mm256_cvtepi64_epi16(g));
    } else if constexpr (B == 4) {
      store128(q, _mm256_cvtepi64_epi32(g));
    } else { // 8-byte stores, each overwriting the previous one's zero tail
      const __m128i lo = _mm256_castsi256_si128(g), hi = _mm256_extracti128_si256(g, 1);
      _mm_storel_epi64(reinterpret_cast<__m128i *>(q), lo);
      _mm_storeh_pd(reinterpret_cast<double *>(q + B), _mm_castsi128_pd(lo));
      _mm_storel_epi64(reinterpret_cast<__m128i *>(q + 2 * B), hi);
      _mm_storeh_pd(reinterpret_cast<double *>(q + 3 * B), _mm_castsi128_pd(hi));
    }
  }

  // w: 32 indices (each < 2^B) in 16-bit lanes -> 4*B bytes at q (writes enc_extent(B) bytes).
  inline void operator()(__m512i w, uint8_t *q) const {
    if constexpr (B == 8) {
      store256(q, _mm512_cvtepi16_epi8(w));
    } else if constexpr (B == 16) {
      store512(q, w);
    } else if constexpr (B < 8) {
      // (a | b) & c = 0xA8. Shifting a lane pair right by (width - k*B) moves the upper member next
      // to the lower one; the lower member's bits fall off because k*B <= width - k*B here.
      __m512i x = _mm512_ternarylogic_epi32(w, _mm512_srli_epi32(w, 16 - B), m16, 0xA8);
      x = _mm512_ternarylogic_epi64(x, _mm512_srli_epi64(x, 32 - 2 * B), m32, 0xA8);
      x = _mm512_or_si512(x, _mm512_slli_epi64(_mm512_bsrli_epi128(x, 8), 4 * B));
      // the group of lane j (8B <= 56 bits) is now its low 64 bits
      if constexpr (B == 3) { // 24-bit groups: dwords 0, 4, 8, 12 -> 12 contiguous bytes
        const __m512i y = _mm512_permutexvar_epi32(sel3, x);
        store128(q, _mm_shuffle_epi8(_mm512_castsi512_si128(y), pack3));
      } else {
        store_groups(lo256(_mm512_permutexvar_epi64(sel, x)), q); // groups in qwords 0..3
      }
    } else { // 9..15 bits: the same tree with explicit masks, the group filling its 128-bit lane
      // (a & c) | b = 0xEC
      __m512i x =
          _mm512_ternarylogic_epi32(w, _mm512_slli_epi32(_mm512_srli_epi32(w, 16), B), m16, 0xEC);
      x = _mm512_ternarylogic_epi64(x, _mm512_slli_epi64(_mm512_srli_epi64(x, 32), 2 * B), m32,
                                    0xEC);
      // low qword: q0 | q1 << 4B; high qword: the bits of q1 that overflow it (4B <= 60)
      x = _mm512_mask_or_epi64(_mm512_srli_epi64(x, 64 - 4 * B), 0x55, x,
                               _mm512_slli_epi64(_mm512_bsrli_epi128(x, 8), 4 * B));
      store128(q, _mm512_castsi512_si128(x)); // 16-byte stores, each overwriting the last's zeros
      store128(q + B, _mm512_extracti32x4_epi32(x, 1));
      store128(q + 2 * B, _mm512_extracti32x4_epi32(x, 2));
      store128(q + 3 * B, _mm512_extracti32x4_epi32(x, 3));
    }
  }
};

// ---- decoding B >= 10: 32-bit lanes, one group per 256-bit half --------------------------------

template <int B> struct DwordDecoder {
  __m512i ctrl, shift, mask;
  DwordDecoder() {
    alignas(64) uint8_t c[64];
    alignas(64) uint32_t s[16];
    for (int e = 0; e < 16; ++e) {
      const int bit = (e % 8) * B, byte = bit >> 3;
      s[e] = static_cast<uint32_t>(bit & 7);
      // shift + B <= 23 bits: 3 bytes do; bytes past the 16-byte window read as zero.
      for (int j = 0; j < 4; ++j)
        c[4 * e + j] = static_cast<uint8_t>(byte + j < 16 ? byte + j : 0x80);
    }
    ctrl = _mm512_load_si512(c);
    shift = _mm512_load_si512(s);
    mask = _mm512_set1_epi32((1 << B) - 1);
  }
  // 16 indices (2 groups at p)
  inline __m512i half(const uint8_t *p) const {
    if constexpr (B == 16) {
      return _mm512_cvtepu16_epi32(load256(p));
    } else {
      __m512i z = _mm512_broadcast_i32x4(load128(p));
      z = _mm512_mask_broadcast_i32x4(z, 0xFF00, load128(p + B));
      z = _mm512_srlv_epi32(_mm512_shuffle_epi8(z, ctrl), shift);
      return _mm512_and_si512(z, mask);
    }
  }
  inline Dwords operator()(const uint8_t *p) const { return {half(p), half(p + 2 * B)}; }
};

} // namespace
} // namespace pack_detail
} // namespace wsq
