// AVX-512 (F + BW + VL) pack / unpack range kernels, 32 indices per step (codec in
// pack_avx512.h). Bit-identical to the scalar kernels in pack.cpp, which also finish the few groups
// at the end of each range where a vector access would cross the range's edge.
#include "pack.h"
#include "pack_codec.h" // before the target pragma (see pack_codec.h)

#if defined(__x86_64__) || defined(__i386__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,popcnt")
#include "pack_avx512.h"

namespace wsq {
namespace pack_detail {
namespace {

template <class T> constexpr int dti_of() {
  return sizeof(T) == 1 ? 0 : sizeof(T) == 2 ? 1 : sizeof(T) == 4 ? 2 : 3;
}

// 32 indices of type T in 32-bit lanes, reduced to their low B bits like the scalar kernel does,
// adding to `bad` how many were negative or >= 2^B (unsigned compares: negatives are huge).
template <class T, int B> inline Dwords load_dwords(const T *s, int64_t &bad) {
  const __m512i mask = _mm512_set1_epi32((1 << B) - 1);
  Dwords d;
  if constexpr (sizeof(T) == 8) {
    const __m512i lim = _mm512_set1_epi64(int64_t{1} << B);
    const __m512i q0 = load512(s), q1 = load512(s + 8), q2 = load512(s + 16), q3 = load512(s + 24);
    const uint32_t m = _mm512_cmpge_epu64_mask(q0, lim) | _mm512_cmpge_epu64_mask(q1, lim) << 8 |
                       _mm512_cmpge_epu64_mask(q2, lim) << 16 |
                       _mm512_cmpge_epu64_mask(q3, lim) << 24;
    bad += _mm_popcnt_u32(m);
    d.a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(q0)),
                             _mm512_cvtepi64_epi32(q1), 1);
    d.b = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(q2)),
                             _mm512_cvtepi64_epi32(q3), 1);
  } else {
    if constexpr (sizeof(T) == 1) {
      d = {_mm512_cvtepu8_epi32(load128(s)), _mm512_cvtepu8_epi32(load128(s + 16))};
    } else if constexpr (sizeof(T) == 2) {
      d = {_mm512_cvtepu16_epi32(load256(s)), _mm512_cvtepu16_epi32(load256(s + 16))};
    } else {
      d = {load512(s), load512(s + 16)};
    }
    if constexpr (sizeof(T) * 8 > B || std::is_signed_v<T>) {
      const __m512i lim = _mm512_set1_epi32(1 << B);
      bad += _mm_popcnt_u32(_mm512_cmpge_epu32_mask(d.a, lim) |
                            static_cast<uint32_t>(_mm512_cmpge_epu32_mask(d.b, lim)) << 16);
    }
  }
  return {_mm512_and_si512(d.a, mask), _mm512_and_si512(d.b, mask)};
}

// Same in 16-bit lanes.
template <class T, int B> inline __m512i load_words(const T *s, int64_t &bad) {
  if constexpr (sizeof(T) <= 2) {
    const __m512i w = sizeof(T) == 1 ? _mm512_cvtepu8_epi16(load256(s)) : load512(s);
    if constexpr (sizeof(T) * 8 > B) {
      bad += _mm_popcnt_u32(
          _mm512_cmpge_epu16_mask(w, _mm512_set1_epi16(static_cast<int16_t>(1 << B))));
    }
    return _mm512_and_si512(w, _mm512_set1_epi16(static_cast<int16_t>((1 << B) - 1)));
  } else {
    return to_words(load_dwords<T, B>(s, bad));
  }
}

template <class T, int B>
int64_t pack_range(const void *idx, uint8_t *out, int64_t g0, int64_t g1) {
  const T *x = static_cast<const T *>(idx);
  if constexpr ((std::is_same_v<T, uint8_t> && B == 8) ||
                (std::is_same_v<T, uint16_t> && B == 16)) {
    // every value fits and the packed stream is the array's own bytes
    std::memcpy(out + g0 * B, x + g0 * 8, static_cast<size_t>((g1 - g0) * B));
    return 0;
  } else {
    constexpr int kNeed = (enc_extent(B) + B - 1) / B;
    const WordEncoder<B> enc;
    int64_t bad = 0, g = g0;
    for (; g + kNeed <= g1; g += 4)
      enc(load_words<T, B>(x + g * 8, bad), out + g * B);
    return bad + pack_scalar(dti_of<T>(), B)(idx, out, g, g1);
  }
}

template <class T> inline void store_words(T *d, __m512i w) { // 32 indices from 16-bit lanes
  if constexpr (sizeof(T) == 1) {
    store256(d, _mm512_cvtepi16_epi8(w));
  } else if constexpr (sizeof(T) == 2) {
    store512(d, w);
  } else if constexpr (sizeof(T) == 4) {
    store512(d, _mm512_cvtepu16_epi32(lo256(w)));
    store512(d + 16, _mm512_cvtepu16_epi32(hi256(w)));
  } else {
    store512(d, _mm512_cvtepu16_epi64(_mm512_castsi512_si128(w)));
    store512(d + 8, _mm512_cvtepu16_epi64(_mm512_extracti32x4_epi32(w, 1)));
    store512(d + 16, _mm512_cvtepu16_epi64(_mm512_extracti32x4_epi32(w, 2)));
    store512(d + 24, _mm512_cvtepu16_epi64(_mm512_extracti32x4_epi32(w, 3)));
  }
}

template <class T>
inline void store_dwords(T *d, __m512i v) { // 16 indices from 32-bit lanes (truncating like C)
  if constexpr (sizeof(T) == 1) {
    store128(d, _mm512_cvtepi32_epi8(v));
  } else if constexpr (sizeof(T) == 2) {
    store256(d, _mm512_cvtepi32_epi16(v));
  } else if constexpr (sizeof(T) == 4) {
    store512(d, v);
  } else {
    store512(d, _mm512_cvtepu32_epi64(lo256(v)));
    store512(d + 8, _mm512_cvtepu32_epi64(hi256(v)));
  }
}

template <class T, int B> void unpack_range(const uint8_t *in, void *out, int64_t g0, int64_t g1) {
  T *y = static_cast<T *>(out);
  if constexpr ((sizeof(T) == 1 && B == 8) || (sizeof(T) == 2 && B == 16)) {
    std::memcpy(y + g0 * 8, in + g0 * B, static_cast<size_t>((g1 - g0) * B));
  } else {
    constexpr int kNeed = (dec_extent(B) + B - 1) / B;
    int64_t g = g0;
    if constexpr (B <= 9) {
      const WordDecoder<B> dec;
      for (; g + kNeed <= g1; g += 4)
        store_words(y + g * 8, dec(in + g * B));
    } else {
      const DwordDecoder<B> dec;
      for (; g + kNeed <= g1; g += 4) {
        const Dwords d = dec(in + g * B);
        store_dwords(y + g * 8, d.a);
        store_dwords(y + g * 8 + 16, d.b);
      }
    }
    unpack_scalar(dti_of<T>(), B)(in, out, g, g1);
  }
}

} // namespace

PackFn pack_avx512(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> PackFn { return &pack_range<decltype(t), decltype(b)::value>; });
  });
}

UnpackFn unpack_avx512(int dti, int bits) {
  return dtype_switch(dti, [&](auto t) {
    return bits_switch(
        bits, [&](auto b) -> UnpackFn { return &unpack_range<decltype(t), decltype(b)::value>; });
  });
}

} // namespace pack_detail
} // namespace wsq

#pragma GCC pop_options

#else // not x86: the dispatcher never asks for these, but the symbols must exist
namespace wsq {
namespace pack_detail {
PackFn pack_avx512(int, int) { return nullptr; }
UnpackFn unpack_avx512(int, int) { return nullptr; }
} // namespace pack_detail
} // namespace wsq
#endif
