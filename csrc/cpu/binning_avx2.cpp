// AVX2 range kernels of the binning family (8 lanes; F16C for fp16 input). Same results as the
// scalar kernels in binning.cpp bit for bit; see binning_avx512.cpp for the scheme.
#include "binning.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cmath> // common.h uses floorf

#include "../common.h"

#define WSQ_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace wsq {
namespace bin_detail {
namespace {

template <int DT> WSQ_AVX2 inline __m256 ld8(const void *p, int64_t i) {
  if (DT == kF32)
    return _mm256_loadu_ps(static_cast<const float *>(p) + i);
  __m128i h =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(p) + i));
  if (DT == kF16)
    return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

struct Bin8 {
  __m256 lo, scale, kmax;
};

// common.h bin_index per lane; max(t, 0) returns its second operand for NaN t: bin 0, as bin_of().
WSQ_AVX2 inline __m256i bin8(__m256 x, const Bin8 &c) {
  __m256 t = _mm256_mul_ps(_mm256_sub_ps(x, c.lo), c.scale);
  t = _mm256_round_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  t = _mm256_max_ps(t, _mm256_setzero_ps());
  t = _mm256_min_ps(t, c.kmax);
  return _mm256_cvttps_epi32(t);
}

WSQ_AVX2 inline void mm_step(__m256 x, __m256i &mn, __m256i &mx, int64_t &bad) {
  const __m256i expm = _mm256_set1_epi32(0x7f800000), mag = _mm256_set1_epi32(0x7fffffff);
  __m256i u = _mm256_castps_si256(x);
  __m256i nf = _mm256_cmpeq_epi32(_mm256_and_si256(u, expm), expm);
  __m256i key = _mm256_xor_si256(u, _mm256_and_si256(_mm256_srai_epi32(u, 31), mag)); // float_key
  mn = _mm256_min_epi32(mn, _mm256_blendv_epi8(key, _mm256_set1_epi32(INT32_MAX), nf));
  mx = _mm256_max_epi32(mx, _mm256_blendv_epi8(key, _mm256_set1_epi32(INT32_MIN), nf));
  if (!_mm256_testz_si256(nf, nf))
    bad += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(nf)));
}

WSQ_AVX2 inline int32_t hmin(__m256i v) {
  __m128i m = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_min_epi32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_min_epi32(m, _mm_shuffle_epi32(m, 0xb1));
  return _mm_cvtsi128_si32(m);
}

WSQ_AVX2 inline int32_t hmax(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
  return _mm_cvtsi128_si32(m);
}

template <int DT> WSQ_AVX2 void minmax_t(const void *w, int64_t b, int64_t e, MinMaxAcc *acc) {
  __m256i mn0 = _mm256_set1_epi32(acc->kmin), mx0 = _mm256_set1_epi32(acc->kmax);
  __m256i mn1 = mn0, mx1 = mx0;
  int64_t bad = 0, i = b;
  for (; i + 16 <= e; i += 16) {
    mm_step(ld8<DT>(w, i), mn0, mx0, bad);
    mm_step(ld8<DT>(w, i + 8), mn1, mx1, bad);
  }
  for (; i + 8 <= e; i += 8)
    mm_step(ld8<DT>(w, i), mn0, mx0, bad);
  acc->kmin = hmin(_mm256_min_epi32(mn0, mn1));
  acc->kmax = hmax(_mm256_max_epi32(mx0, mx1));
  acc->nonfinite += bad;
  minmax_scalar(w, DT, i, e, acc);
}

// Histogram pass, 32 elements per block (scheme as in binning_avx512.cpp).
template <int DT, int IDT>
WSQ_AVX2 void hist_t(const HistArgs &a, int64_t b, int64_t e, double *H) {
  const Bin8 c{_mm256_set1_ps(a.lo), _mm256_set1_ps(a.scale), _mm256_set1_ps(a.kmax)};
  alignas(32) int32_t cb[8];
  for (int j = 0; j < 8; ++j)
    cb[j] = (j % a.copies) * a.kpad;
  const __m256i vcb = _mm256_load_si256(reinterpret_cast<const __m256i *>(cb));
  alignas(32) uint16_t off[32];
  alignas(32) float xs[32]; // fp16/bf16 input widened (fp32 input is read in place)
  int64_t i = b;
  for (; i + 32 <= e; i += 32) {
    for (int q = 0; q < 4; q += 2) {
      const int64_t at = i + 8 * q;
      __m256 x0 = ld8<DT>(a.w, at), x1 = ld8<DT>(a.w, at + 8);
      __m256i b0 = bin8(x0, c), b1 = bin8(x1, c);
      // packus interleaves 128-bit lanes; the permute restores element order (values < 65536).
      if (IDT == kU8 || IDT == kU16) {
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(b0, b1), 0xd8); // 16 x u16
        if (IDT == kU16)
          _mm256_storeu_si256(reinterpret_cast<__m256i *>(static_cast<uint16_t *>(a.idx) + at), p);
        else
          _mm_storeu_si128(
              reinterpret_cast<__m128i *>(static_cast<uint8_t *>(a.idx) + at),
              _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
      }
      __m256i o = _mm256_packus_epi32(_mm256_add_epi32(b0, vcb), _mm256_add_epi32(b1, vcb));
      _mm256_store_si256(reinterpret_cast<__m256i *>(off + 8 * q),
                         _mm256_permute4x64_epi64(o, 0xd8));
      if (DT != kF32) {
        _mm256_store_ps(xs + 8 * q, x0);
        _mm256_store_ps(xs + 8 * q + 8, x1);
      }
    }
    scatter_pairs(DT == kF32 ? static_cast<const float *>(a.w) + i : xs, off, 32, H);
  }
  hist_scalar(a, i, e, H); // (i - b) is a multiple of 32, hence of copies
}

template <int DT> WSQ_AVX2 void hist_idt(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.idx == nullptr)
    hist_t<DT, -1>(a, b, e, H);
  else if (a.idt == kU8)
    hist_t<DT, kU8>(a, b, e, H);
  else
    hist_t<DT, kU16>(a, b, e, H);
}

// Fused fake-quant; SMALL: k <= 8, the table sits in one register (permute), else gather.
template <int DT, int ODT, bool SMALL> WSQ_AVX2 void fq_t(const FqArgs &a, int64_t b, int64_t e) {
  const Bin8 c{_mm256_set1_ps(a.lo), _mm256_set1_ps(a.scale), _mm256_set1_ps(a.kmax)};
  const int32_t *table = ODT == kF32 ? reinterpret_cast<const int32_t *>(a.values)
                                     : reinterpret_cast<const int32_t *>(a.values16);
  __m256i t0 = _mm256_setzero_si256();
  if (SMALL) {
    alignas(32) int32_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < a.k; ++j)
      tmp[j] = table[j];
    t0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(tmp));
  }
  int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    __m256i bi = bin8(ld8<DT>(a.w, i), c);
    __m256i v = SMALL ? _mm256_permutevar8x32_epi32(t0, bi) : _mm256_i32gather_epi32(table, bi, 4);
    if (ODT == kF32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(static_cast<float *>(a.out) + i), v);
    } else {
      __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08); // 8 x u16 in order
      _mm_storeu_si128(reinterpret_cast<__m128i *>(static_cast<uint16_t *>(a.out) + i),
                       _mm256_castsi256_si128(p));
    }
  }
  fq_scalar(a, i, e);
}

template <int DT, int ODT> WSQ_AVX2 void fq_mode(const FqArgs &a, int64_t b, int64_t e) {
  if (a.k <= 8)
    fq_t<DT, ODT, true>(a, b, e);
  else
    fq_t<DT, ODT, false>(a, b, e);
}

template <int DT> WSQ_AVX2 void fq_odt(const FqArgs &a, int64_t b, int64_t e) {
  if (a.odt == kF32)
    fq_mode<DT, kF32>(a, b, e);
  else if (a.odt == kF16)
    fq_mode<DT, kF16>(a, b, e);
  else
    fq_mode<DT, kBF16>(a, b, e);
}

} // namespace

void minmax_avx2(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc) {
  if (dt == kF32)
    minmax_t<kF32>(w, b, e, acc);
  else if (dt == kF16)
    minmax_t<kF16>(w, b, e, acc);
  else
    minmax_t<kBF16>(w, b, e, acc);
}

void hist_avx2(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.wdt == kF32)
    hist_idt<kF32>(a, b, e, H);
  else if (a.wdt == kF16)
    hist_idt<kF16>(a, b, e, H);
  else
    hist_idt<kBF16>(a, b, e, H);
}

void fq_avx2(const FqArgs &a, int64_t b, int64_t e) {
  if (a.wdt == kF32)
    fq_odt<kF32>(a, b, e);
  else if (a.wdt == kF16)
    fq_odt<kF16>(a, b, e);
  else
    fq_odt<kBF16>(a, b, e);
}

} // namespace bin_detail
} // namespace wsq

#endif // x86
