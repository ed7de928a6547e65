// AVX-512 (F + BW + VL) range kernels of the binning family. Same results as the scalar kernels in
// binning.cpp bit for bit: the bin index is common.h's formula done lane-wise (separate sub and
// mul, -ffp-contract=off keeps them unfused), and every tail goes through the scalar kernel.
#include "binning.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cmath> // common.h uses floorf

#include "../common.h"

#define WSQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace wsq {
namespace bin_detail {
namespace {

// 16 elements of dtype DT as float32 (fp16 and bf16 widen exactly).
template <int DT> WSQ_AVX512 inline __m512 ld16(const void *p, int64_t i) {
  if (DT == kF32)
    return _mm512_loadu_ps(static_cast<const float *>(p) + i);
  __m256i h =
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(static_cast<const uint16_t *>(p) + i));
  if (DT == kF16)
    return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

struct Bin16 {
  __m512 lo, scale, kmax;
};

// common.h bin_index per lane. max(t, 0) returns its second operand when t is NaN, so NaN -> bin 0
// exactly like bin_of() in binning.cpp; +-inf clamp to the end bins.
WSQ_AVX512 inline __m512i bin16(__m512 x, const Bin16 &c) {
  __m512 t = _mm512_mul_ps(_mm512_sub_ps(x, c.lo), c.scale);
  t = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  t = _mm512_max_ps(t, _mm512_setzero_ps());
  t = _mm512_min_ps(t, c.kmax);
  return _mm512_cvttps_epi32(t);
}

WSQ_AVX512 inline void mm_step(__m512 x, __m512i &mn, __m512i &mx, int64_t &bad) {
  const __m512i expm = _mm512_set1_epi32(0x7f800000), mag = _mm512_set1_epi32(0x7fffffff);
  __m512i u = _mm512_castps_si512(x);
  __mmask16 nf = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, expm), expm);
  __m512i key = _mm512_xor_si512(u, _mm512_and_si512(_mm512_srai_epi32(u, 31), mag)); // float_key
  mn = _mm512_mask_min_epi32(mn, static_cast<__mmask16>(~nf), mn, key);
  mx = _mm512_mask_max_epi32(mx, static_cast<__mmask16>(~nf), mx, key);
  if (nf)
    bad += __builtin_popcount(nf); // rare: keeps the hot loop free of the count
}

template <int DT> WSQ_AVX512 void minmax_t(const void *w, int64_t b, int64_t e, MinMaxAcc *acc) {
  __m512i mn0 = _mm512_set1_epi32(acc->kmin), mx0 = _mm512_set1_epi32(acc->kmax);
  __m512i mn1 = mn0, mx1 = mx0;
  int64_t bad = 0, i = b;
  for (; i + 32 <= e; i += 32) {
    mm_step(ld16<DT>(w, i), mn0, mx0, bad);
    mm_step(ld16<DT>(w, i + 16), mn1, mx1, bad);
  }
  for (; i + 16 <= e; i += 16)
    mm_step(ld16<DT>(w, i), mn0, mx0, bad);
  acc->kmin = _mm512_reduce_min_epi32(_mm512_min_epi32(mn0, mn1));
  acc->kmax = _mm512_reduce_max_epi32(_mm512_max_epi32(mx0, mx1));
  acc->nonfinite += bad;
  minmax_scalar(w, DT, i, e, acc);
}

// The fused histogram pass, 64 elements per block: a vector phase computes the bins, writes the
// indices and each element's accumulator offset (u16, copy included); scatter_pairs then adds
// (float64 value, 1.0) with one 128-bit load-add-store per element. Keeping the count as a float64
// beside the sum halves the scatter's memory operations, and the sub-histogram copies (lane j ->
// copy j % copies) keep runs of one bin from forming one long store-to-load dependency chain.
template <int DT, int IDT>
WSQ_AVX512 void hist_t(const HistArgs &a, int64_t b, int64_t e, double *H) {
  const Bin16 c{_mm512_set1_ps(a.lo), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.kmax)};
  alignas(64) int32_t cb[16];
  for (int j = 0; j < 16; ++j)
    cb[j] = (j % a.copies) * a.kpad;
  const __m512i vcb = _mm512_load_si512(cb);
  alignas(64) uint16_t off[64];
  alignas(64) float xs[64]; // fp16/bf16 input widened (fp32 input is read in place)
  int64_t i = b;
  for (; i + 64 <= e; i += 64) {
    for (int q = 0; q < 4; ++q) {
      const int64_t at = i + 16 * q;
      __m512 x = ld16<DT>(a.w, at);
      __m512i bi = bin16(x, c);
      if (IDT == kU8)
        _mm_storeu_si128(reinterpret_cast<__m128i *>(static_cast<uint8_t *>(a.idx) + at),
                         _mm512_cvtepi32_epi8(bi));
      if (IDT == kU16)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(static_cast<uint16_t *>(a.idx) + at),
                            _mm512_cvtepi32_epi16(bi));
      _mm256_store_si256(reinterpret_cast<__m256i *>(off + 16 * q),
                         _mm512_cvtepi32_epi16(_mm512_add_epi32(bi, vcb)));
      if (DT != kF32)
        _mm512_store_ps(xs + 16 * q, x);
    }
    scatter_pairs(DT == kF32 ? static_cast<const float *>(a.w) + i : xs, off, 64, H);
  }
  // (i - b) is a multiple of 64, hence of copies: the tail keeps the lane -> copy assignment.
  hist_scalar(a, i, e, H);
}

template <int DT> WSQ_AVX512 void hist_idt(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.idx == nullptr)
    hist_t<DT, -1>(a, b, e, H);
  else if (a.idt == kU8)
    hist_t<DT, kU8>(a, b, e, H);
  else
    hist_t<DT, kU16>(a, b, e, H);
}

// Fused fake-quant. The value table is float32 bits (out kF32) or 16-bit patterns widened to 32
// (out kF16/kBF16, converted once by the caller). MODE 1: k <= 16, the table sits in one register
// (permute); MODE 2: k <= 32, two registers; MODE 0: gather from memory.
template <int DT, int ODT, int MODE> WSQ_AVX512 void fq_t(const FqArgs &a, int64_t b, int64_t e) {
  const Bin16 c{_mm512_set1_ps(a.lo), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.kmax)};
  const int32_t *table = ODT == kF32 ? reinterpret_cast<const int32_t *>(a.values)
                                     : reinterpret_cast<const int32_t *>(a.values16);
  __m512i t0 = _mm512_setzero_si512(), t1 = _mm512_setzero_si512();
  if (MODE != 0) {
    // Masked loads: never read past the k entries.
    int k0 = a.k < 16 ? a.k : 16, k1 = a.k - k0;
    t0 = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << k0) - 1u), table);
    if (k1 > 0)
      t1 = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << k1) - 1u), table + 16);
  }
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    __m512i bi = bin16(ld16<DT>(a.w, i), c);
    __m512i v;
    if (MODE == 1)
      v = _mm512_permutexvar_epi32(bi, t0);
    else if (MODE == 2)
      v = _mm512_permutex2var_epi32(t0, bi, t1);
    else
      v = _mm512_i32gather_epi32(bi, table, 4);
    if (ODT == kF32)
      _mm512_storeu_si512(static_cast<float *>(a.out) + i, v);
    else
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(static_cast<uint16_t *>(a.out) + i),
                          _mm512_cvtepi32_epi16(v));
  }
  fq_scalar(a, i, e);
}

template <int DT, int ODT> WSQ_AVX512 void fq_mode(const FqArgs &a, int64_t b, int64_t e) {
  if (a.k <= 16)
    fq_t<DT, ODT, 1>(a, b, e);
  else if (a.k <= 32)
    fq_t<DT, ODT, 2>(a, b, e);
  else
    fq_t<DT, ODT, 0>(a, b, e);
}

template <int DT> WSQ_AVX512 void fq_odt(const FqArgs &a, int64_t b, int64_t e) {
  if (a.odt == kF32)
    fq_mode<DT, kF32>(a, b, e);
  else if (a.odt == kF16)
    fq_mode<DT, kF16>(a, b, e);
  else
    fq_mode<DT, kBF16>(a, b, e);
}

} // namespace

__attribute__((target("avx512f,avx512bw,avx512vbmi"))) int64_t
relabel_u8_vbmi(const uint8_t *in, int64_t n, const uint8_t *t8, int len, uint8_t *out) {
  const __m512i T0 = _mm512_loadu_si512(t8), T1 = _mm512_loadu_si512(t8 + 64);
  const __m512i T2 = _mm512_loadu_si512(t8 + 128), T3 = _mm512_loadu_si512(t8 + 192);
  const __m512i vlen = _mm512_set1_epi8(static_cast<char>(len < 256 ? len : 0));
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i += 64) {
    const __mmask64 m = n - i >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (n - i)) - 1);
    __m512i x = _mm512_maskz_loadu_epi8(m, in + i);
    if (len < 256)
      bad += __builtin_popcountll(_mm512_mask_cmpge_epu8_mask(m, x, vlen));
    // Bit 7 of the index picks between two 128-entry permutes (bits 0-6).
    __m512i lo = _mm512_permutex2var_epi8(T0, x, T1), hi = _mm512_permutex2var_epi8(T2, x, T3);
    _mm512_mask_storeu_epi8(out + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi));
  }
  return bad;
}

void minmax_avx512(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc) {
  if (dt == kF32)
    minmax_t<kF32>(w, b, e, acc);
  else if (dt == kF16)
    minmax_t<kF16>(w, b, e, acc);
  else
    minmax_t<kBF16>(w, b, e, acc);
}

void hist_avx512(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.wdt == kF32)
    hist_idt<kF32>(a, b, e, H);
  else if (a.wdt == kF16)
    hist_idt<kF16>(a, b, e, H);
  else
    hist_idt<kBF16>(a, b, e, H);
}

void fq_avx512(const FqArgs &a, int64_t b, int64_t e) {
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
