// AVX-512 (F + BW + VL) range kernels of the pack family, 32 indices per step (codec in
// pack_avx512.h): pack / unpack, and remap (the merge kernel: decode 32 packed indices into
// registers, look each up in the table, encode at the output width, store; no unpacked array).
// Bit-identical to the scalar kernels in pack.cpp, which also finish the few groups at the end of
// each range where a vector access would cross the range's edge.
#include "pack.h"
#include "pack_codec.h" // before the target pragma (see pack_codec.h)

#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>
#include <type_traits>

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

// ---- remap


// Lookup of 32 indices in 16-bit lanes in a table of 2^BI <= 512 entries (values < 2^16) held in
// registers: vpermi2w covers 64 entries, larger tables take 2^(BI-6) of them and a blend tree on
// index bits 6..BI-1. Measured on Zen 4: 4.7 G lookups/s/core at BI = 9; at BI = 10 it only ties
// with vpgatherdd, which (like scalar loads) tops out near one lookup per cycle.
template <int BI> struct WordLut {
  static constexpr int kParts = BI <= 6 ? 1 : 1 << (BI - 6);
  __m512i t[2 * kParts];
  explicit WordLut(const uint32_t *tbl) {
    alignas(64) uint16_t pad[64 * kParts] = {};
    for (int i = 0; i < (1 << BI); ++i)
      pad[i] = static_cast<uint16_t>(tbl[i]);
    for (int i = 0; i < 2 * kParts; ++i)
      t[i] = _mm512_load_si512(pad + 32 * i);
  }
  inline __m512i operator()(__m512i v) const {
    if constexpr (BI <= 5) {
      return _mm512_permutexvar_epi16(v, t[0]);
    } else {
      __m512i r[kParts];
      for (int i = 0; i < kParts; ++i)
        r[i] = _mm512_permutex2var_epi16(t[2 * i], v, t[2 * i + 1]);
      for (int bit = 6, n = kParts; n > 1; ++bit, n /= 2) {
        const __mmask32 m =
            _mm512_test_epi16_mask(v, _mm512_set1_epi16(static_cast<int16_t>(1 << bit)));
        for (int i = 0; i < n / 2; ++i)
          r[i] = _mm512_mask_blend_epi16(m, r[2 * i], r[2 * i + 1]);
      }
      return r[0];
    }
  }
};

struct NoLut {
  explicit NoLut(const uint32_t *) {}
};

// BI = BO in {1, 2, 4}: every byte holds whole indices and maps to one byte, so the remap is a
// byte -> byte map applied a nibble at a time with vpshufb from 16-entry tables, 64 bytes per step;
// counting bad indices takes a second pair of lookups (nibble -> number of bad indices in it).
template <int B, bool kCheck>
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
  const __m512i tlo = _mm512_broadcast_i32x4(load128(map));
  const __m512i thi = _mm512_slli_epi16(tlo, 4); // map[x] < 16: no bits cross into the next byte
  const __m512i tbad = _mm512_broadcast_i32x4(load128(nbad));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i acc = _mm512_setzero_si512();
  const int64_t end = g1 * B;
  for (int64_t i = g0 * B; i < end; i += 64) {
    const __mmask64 m = end - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (end - i)) - 1;
    const __m512i x = _mm512_maskz_loadu_epi8(m, in + i);
    const __m512i lo = _mm512_and_si512(x, low4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low4);
    _mm512_mask_storeu_epi8(
        out + i, m, _mm512_or_si512(_mm512_shuffle_epi8(tlo, lo), _mm512_shuffle_epi8(thi, hi)));
    if constexpr (kCheck) { // the zero bytes past `end` hold index 0, which is never bad (len >= 1)
      const __m512i c =
          _mm512_add_epi8(_mm512_shuffle_epi8(tbad, lo), _mm512_shuffle_epi8(tbad, hi));
      acc = _mm512_add_epi64(acc, _mm512_sad_epu8(c, _mm512_setzero_si512()));
    }
  }
  return kCheck ? _mm512_reduce_add_epi64(acc) : 0;
}

template <int BI, int BO>
int64_t remap_range(const uint8_t *in, uint8_t *out, const uint32_t *tbl, int64_t len, int64_t g0,
                    int64_t g1) {
  if constexpr (BI == BO && (BI == 1 || BI == 2 || BI == 4)) {
    return len < (1 << BI) ? remap_nibbles<BI, true>(in, out, tbl, len, g0, g1)
                           : remap_nibbles<BI, false>(in, out, tbl, len, g0, g1);
  } else {
    // Tables up to 512 entries are looked up in registers (16-bit lanes), larger ones gathered
    // from the padded table (L2-resident: 256 KiB at most).
    // Both are the bounds of the 16-bit lane paths (decoder: shift + BI <= 16 bits).
    constexpr bool kRegLut = BI <= 9;
    constexpr int kNeed = groups_needed(BI, BO);
    const std::conditional_t<kRegLut, WordDecoder<(kRegLut ? BI : 1)>, DwordDecoder<BI>> dec;
    const WordEncoder<BO> enc;
    const std::conditional_t<kRegLut, WordLut<(kRegLut ? BI : 1)>, NoLut> lut(tbl);
    const int64_t lim = std::min<int64_t>(len, int64_t{1} << BI);
    const __m512i lim16 = _mm512_set1_epi16(static_cast<int16_t>(std::min<int64_t>(lim, 512)));
    const __m512i lim32 = _mm512_set1_epi32(static_cast<int32_t>(lim));
    int64_t bad = 0, g = g0;
    for (; g + kNeed <= g1; g += 4) {
      const uint8_t *p = in + g * BI;
      uint8_t *q = out + g * BO;
      if constexpr (kRegLut) {
        const __m512i w = dec(p);
        bad += _mm_popcnt_u32(_mm512_cmpge_epu16_mask(w, lim16));
        enc(lut(w), q);
      } else {
        const Dwords d = dec(p);
        bad += _mm_popcnt_u32(_mm512_cmpge_epu32_mask(d.a, lim32) |
                              static_cast<uint32_t>(_mm512_cmpge_epu32_mask(d.b, lim32)) << 16);
        enc(to_words({_mm512_i32gather_epi32(d.a, tbl, 4), _mm512_i32gather_epi32(d.b, tbl, 4)}),
            q);
      }
    }
    return bad + remap_scalar(BI, BO)(in, out, tbl, len, g, g1);
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

RemapFn remap_avx512(int bits_in, int bits_out) {
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
PackFn pack_avx512(int, int) { return nullptr; }
UnpackFn unpack_avx512(int, int) { return nullptr; }
RemapFn remap_avx512(int, int) { return nullptr; }
} // namespace pack_detail
} // namespace wsq
#endif
