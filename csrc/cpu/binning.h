// Uniform binning kernels (issue 2, kernels 1 and 2): min/max, the fused bin+count+sum(+index)
// pass, relabelling of indices through a table, and fused fake-quant w -> values[bin(w)].
//
// Every entry point checks its C ABI arguments (std::invalid_argument -> ValueError), picks the
// scalar / AVX2 / AVX-512 path from wsq::active_isa() and runs OpenMP-parallel over contiguous
// element ranges. All paths give bit-identical results (indices, counts, sums, outputs) for the
// same thread count; the bin index of every element is csrc/common.h bin_index. Element counts and
// offsets are int64 throughout (pools past 2^31 elements).
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

namespace wsq {

struct MinMax {
  float lo, hi;      // min and max over the finite elements (0, 0 if there are none)
  int64_t nonfinite; // NaN and +-Inf elements (excluded from lo/hi)
};

// One pass over n elements of w (dtype kF32/kF16/kBF16). -0.0 orders below +0.0.
MinMax minmax(const void *w, int64_t n, int w_dtype);

// One fused pass: raw bin of every element under (lo, scale), k bins; counts[k] (int64) and
// sums[k] (float64 sums of the members) are overwritten. idx (optional, nullptr = skip) receives
// the raw bin index as kU8 (k <= 256) or kU16. NaN elements land in bin 0 (never out of bounds).
void histogram(const void *w, int64_t n, int w_dtype, int k, float lo, float scale, int64_t *counts,
               double *sums, void *idx, int idx_dtype);

// out[i] = table[idx[i]], in/out dtypes kU8/kU16/kI32/kI64. Every idx value must be in
// [0, table_len) and every table value must fit out's dtype, else std::invalid_argument (idx values
// are counted in the same pass; the offending elements are never used to read memory).
void relabel(const void *idx, int64_t n, int in_dtype, const int32_t *table, int64_t table_len,
             void *out, int out_dtype);

// out[i] = values[bin(w[i])] in one pass, no index array; out may alias w exactly (same dtype).
// out dtype kF32/kF16/kBF16, converted with round-to-nearest-even (common.h store_float).
void fake_quant(const void *w, int64_t n, int w_dtype, int k, float lo, float scale,
                const float *values, void *out, int out_dtype);

// ---- internal: per-ISA range kernels shared by binning.cpp and binning_avx*.cpp -----------------
namespace bin_detail {

// Order-preserving int32 key of a float's bits: keys compare like the floats, -0.0 < +0.0.
// (The map is an involution, so the same function turns a key back into float bits.)
inline int32_t float_key(uint32_t u) {
  return static_cast<int32_t>(
      u ^ ((static_cast<uint32_t>(static_cast<int32_t>(u) >> 31)) & 0x7fffffffu));
}

struct MinMaxAcc {
  int32_t kmin, kmax; // running float keys over the finite elements seen
  int64_t nonfinite;
};

// The histogram accumulator of one thread: `copies` sub-histograms of k (sum, count) float64 pairs,
// H[(c * kpad + b) * 2 + {0: sum, 1: count}]. Element j of a range (counted from the range start)
// adds to copy j % copies, so runs of equal bins do not serialise on one memory location. Counts
// are float64 too (exact below 2^53) so one 128-bit add updates both.
struct HistArgs {
  const void *w;
  int wdt;
  float lo, scale, kmax;
  int k;
  int copies; // 1, 2, 4 or 8
  int kpad;   // pairs from one copy to the next (>= k); copies * kpad <= 65536 (u16 offsets)
  void *idx;  // nullptr or the full index output (written at the same positions as w)
  int idt;    // kU8 or kU16
};

struct FqArgs {
  const void *w;
  int wdt;
  float lo, scale, kmax;
  int k;
  const float *values;      // k float32 values
  const uint32_t *values16; // k fp16/bf16 bit patterns of values (out dtype kF16/kBF16), else null
  void *out;
  int odt;
};

#if defined(__x86_64__) || defined(__i386__)
// The scatter half of the vector histogram kernels: element j of a block adds
// (float64(src[j]), 1.0) to the pair at H + 2 * off[j], one 128-bit load-add-store each. cvtss2sd
// into a register of ones builds the pair in one instruction from a scalar load; the offsets (pair
// units, copy included, < 65536) are read four at a time. n is a multiple of 4. SSE2 only, so both
// AVX files inline it.
inline void scatter_pairs(const float *src, const uint16_t *off, int n, double *H) {
  const __m128d ones = _mm_set1_pd(1.0);
  for (int j = 0; j < n; j += 4) {
    uint64_t o;
    std::memcpy(&o, off + j, 8);
    for (int u = 0; u < 4; ++u, o >>= 16) {
      double *h = H + 2 * (o & 0xffffu);
      __m128d p = _mm_cvtss_sd(ones, _mm_load_ss(src + j + u));
      _mm_storeu_pd(h, _mm_add_pd(_mm_loadu_pd(h), p));
    }
  }
}
#endif

// Range [b, e) of the flat input. The AVX kernels fall back to the scalar ones for their tails, so
// a range's element-to-copy assignment and summation order are the same on every path.
void minmax_scalar(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc);
void minmax_avx2(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc);
void minmax_avx512(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc);

void hist_scalar(const HistArgs &a, int64_t b, int64_t e, double *H);
void hist_avx2(const HistArgs &a, int64_t b, int64_t e, double *H);
void hist_avx512(const HistArgs &a, int64_t b, int64_t e, double *H);

// u8 -> u8 relabel through a 256-byte table with AVX-512 VBMI byte permutes (64 lookups in a few
// instructions); values >= len count as bad (and read t8, which is 0 there). Needs avx512vbmi.
int64_t relabel_u8_vbmi(const uint8_t *in, int64_t n, const uint8_t *t8, int len, uint8_t *out);

void fq_scalar(const FqArgs &a, int64_t b, int64_t e);
void fq_avx2(const FqArgs &a, int64_t b, int64_t e);
void fq_avx512(const FqArgs &a, int64_t b, int64_t e);

} // namespace bin_detail
} // namespace wsq
