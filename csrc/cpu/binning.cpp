// Uniform binning: argument checks, OpenMP orchestration and the scalar range kernels (the
// reference the AVX2 / AVX-512 kernels in binning_avx*.cpp match bit for bit).
#include "binning.h"

#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../common.h"
#include "cpu_features.h"

namespace wsq {
namespace bin_detail {

// common.h bin_index, plus a defined answer for NaN (a NaN weight, or inf * 0 when scale == 0):
// bin 0, which is also what the vector paths' max(t, 0) gives. Without it the float -> int
// conversion of NaN is undefined and could index out of bounds.
static inline int32_t bin_of(float x, float lo, float scale, float kmax) {
  float t = (x - lo) * scale;
  if (t != t)
    return 0;
  return bin_index(x, lo, scale, kmax);
}

template <int DT> static inline float load_dt(const void *p, int64_t i) {
  return load_float(p, i, DT);
}

template <int DT> static void minmax_t(const void *w, int64_t b, int64_t e, MinMaxAcc *acc) {
  int32_t kmin = acc->kmin, kmax = acc->kmax;
  int64_t bad = 0;
  for (int64_t i = b; i < e; ++i) {
    float x = load_dt<DT>(w, i);
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) {
      ++bad;
      continue;
    }
    int32_t key = float_key(u);
    kmin = std::min(kmin, key);
    kmax = std::max(kmax, key);
  }
  acc->kmin = kmin;
  acc->kmax = kmax;
  acc->nonfinite += bad;
}

void minmax_scalar(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc) {
  if (dt == kF32)
    minmax_t<kF32>(w, b, e, acc);
  else if (dt == kF16)
    minmax_t<kF16>(w, b, e, acc);
  else
    minmax_t<kBF16>(w, b, e, acc);
}

// IDT: kU8, kU16, or -1 (no index output).
template <int DT, int IDT> static void hist_t(const HistArgs &a, int64_t b, int64_t e, double *H) {
  const int64_t cmask = a.copies - 1, stride = 2 * static_cast<int64_t>(a.kpad);
  for (int64_t i = b; i < e; ++i) {
    float x = load_dt<DT>(a.w, i);
    int32_t bi = bin_of(x, a.lo, a.scale, a.kmax);
    double *h = H + ((i - b) & cmask) * stride + 2 * static_cast<int64_t>(bi);
    h[0] += static_cast<double>(x);
    h[1] += 1.0;
    if (IDT == kU8)
      static_cast<uint8_t *>(a.idx)[i] = static_cast<uint8_t>(bi);
    if (IDT == kU16)
      static_cast<uint16_t *>(a.idx)[i] = static_cast<uint16_t>(bi);
  }
}

template <int DT> static void hist_idt(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.idx == nullptr)
    hist_t<DT, -1>(a, b, e, H);
  else if (a.idt == kU8)
    hist_t<DT, kU8>(a, b, e, H);
  else
    hist_t<DT, kU16>(a, b, e, H);
}

void hist_scalar(const HistArgs &a, int64_t b, int64_t e, double *H) {
  if (a.wdt == kF32)
    hist_idt<kF32>(a, b, e, H);
  else if (a.wdt == kF16)
    hist_idt<kF16>(a, b, e, H);
  else
    hist_idt<kBF16>(a, b, e, H);
}

template <int DT, int ODT> static void fq_t(const FqArgs &a, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    int32_t bi = bin_of(load_dt<DT>(a.w, i), a.lo, a.scale, a.kmax);
    store_float(a.out, i, a.values[bi], ODT);
  }
}

template <int DT> static void fq_odt(const FqArgs &a, int64_t b, int64_t e) {
  if (a.odt == kF32)
    fq_t<DT, kF32>(a, b, e);
  else if (a.odt == kF16)
    fq_t<DT, kF16>(a, b, e);
  else
    fq_t<DT, kBF16>(a, b, e);
}

void fq_scalar(const FqArgs &a, int64_t b, int64_t e) {
  if (a.wdt == kF32)
    fq_odt<kF32>(a, b, e);
  else if (a.wdt == kF16)
    fq_odt<kF16>(a, b, e);
  else
    fq_odt<kBF16>(a, b, e);
}

#if !(defined(__x86_64__) || defined(__i386__))
// Non-x86 builds have no AVX kernels; active_isa() is always scalar there.
void minmax_avx2(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc) {
  minmax_scalar(w, dt, b, e, acc);
}
void minmax_avx512(const void *w, int dt, int64_t b, int64_t e, MinMaxAcc *acc) {
  minmax_scalar(w, dt, b, e, acc);
}
void hist_avx2(const HistArgs &a, int64_t b, int64_t e, double *H) { hist_scalar(a, b, e, H); }
void hist_avx512(const HistArgs &a, int64_t b, int64_t e, double *H) { hist_scalar(a, b, e, H); }
void fq_avx2(const FqArgs &a, int64_t b, int64_t e) { fq_scalar(a, b, e); }
void fq_avx512(const FqArgs &a, int64_t b, int64_t e) { fq_scalar(a, b, e); }
#endif

} // namespace bin_detail

using namespace bin_detail;

namespace {

bool is_float_dtype(int dt) { return dt == kF32 || dt == kF16 || dt == kBF16; }
bool is_index_dtype(int dt) { return dt == kU8 || dt == kU16 || dt == kI32 || dt == kI64; }

// The ISA for a kernel reading dtype `dt`: the AVX2 path converts fp16 with F16C, which a (rare)
// AVX2 CPU without F16C lacks.
Isa isa_for(int dt) {
  Isa isa = active_isa();
#if defined(__x86_64__) || defined(__i386__)
  static const bool f16c = __builtin_cpu_supports("f16c");
  if (isa == Isa::kAvx2 && dt == kF16 && !f16c)
    isa = Isa::kScalar;
#else
  (void)dt;
#endif
  return isa;
}

// Threads for a pass over n elements when each thread needs at least `grain` of them to pay for
// its start-up (and, for the histogram, for zeroing and merging its private accumulators).
int threads_for(int64_t n, int64_t grain) {
  int64_t t = std::min<int64_t>(omp_get_max_threads(), n / std::max<int64_t>(grain, 1));
  return static_cast<int>(std::max<int64_t>(t, 1));
}

// Start of thread t's contiguous range when n elements are split over T threads.
int64_t range_start(int64_t n, int T, int t) {
  int64_t q = n / T, r = n % T;
  return q * t + std::min<int64_t>(t, r);
}

// Fraction of neighbouring elements that share a bin, from 16 evenly spread runs of 128 elements.
// Such runs (constant layers, pruned zeros, duplicate-heavy pools) serialise the histogram's
// accumulator updates on one memory location; more sub-histogram copies then pay off even beyond
// L1. Deterministic in the data, so the choice (and hence the float64 sums) is reproducible.
double same_bin_fraction(const void *w, int dt, int64_t n, float lo, float scale, float kmax) {
  constexpr int64_t S = 16, L = 128;
  if (n < 4 * S * L)
    return 0.0;
  int64_t same = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t start = (n - L) / (S - 1) * s;
    int32_t prev = bin_of(load_float(w, start, dt), lo, scale, kmax);
    for (int64_t j = 1; j < L; ++j) {
      int32_t cur = bin_of(load_float(w, start + j, dt), lo, scale, kmax);
      same += cur == prev;
      prev = cur;
    }
  }
  return static_cast<double>(same) / static_cast<double>(S * (L - 1));
}

void check_ptr(const void *p, int64_t n, const char *name) {
  check(n == 0 || p != nullptr, std::string(name) + " is a null pointer");
}

} // namespace

MinMax minmax(const void *w, int64_t n, int w_dtype) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_float_dtype(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check_ptr(w, n, "w");
  if (n == 0)
    return {0.0f, 0.0f, 0};
  auto fn = minmax_scalar;
  Isa isa = isa_for(w_dtype);
  if (isa == Isa::kAvx512)
    fn = minmax_avx512;
  else if (isa == Isa::kAvx2)
    fn = minmax_avx2;
  const int T = threads_for(n, 1 << 16);
  std::vector<MinMaxAcc> acc(T, MinMaxAcc{INT32_MAX, INT32_MIN, 0});
#pragma omp parallel num_threads(T)
  {
    int t = omp_get_thread_num();
    fn(w, w_dtype, range_start(n, T, t), range_start(n, T, t + 1), &acc[t]);
  }
  MinMaxAcc r{INT32_MAX, INT32_MIN, 0};
  for (const auto &a : acc) {
    r.kmin = std::min(r.kmin, a.kmin);
    r.kmax = std::max(r.kmax, a.kmax);
    r.nonfinite += a.nonfinite;
  }
  if (r.nonfinite == n)
    return {0.0f, 0.0f, n};
  auto to_float = [](int32_t key) {
    uint32_t u = static_cast<uint32_t>(float_key(static_cast<uint32_t>(key)));
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  return {to_float(r.kmin), to_float(r.kmax), r.nonfinite};
}

void histogram(const void *w, int64_t n, int w_dtype, int k, float lo, float scale, int64_t *counts,
               double *sums, void *idx, int idx_dtype) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_float_dtype(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check(k >= 1 && k <= 65536, "k must be in 1..65536, got " + std::to_string(k));
  check(std::isfinite(lo) && std::isfinite(scale) && scale >= 0.0f,
        "lo must be finite and scale finite and >= 0");
  check(counts != nullptr && sums != nullptr, "counts and sums must not be null");
  check_ptr(w, n, "w");
  if (idx != nullptr)
    check((idx_dtype == kU8 && k <= 256) || idx_dtype == kU16,
          "idx_dtype must be uint8 (k <= 256) or uint16, got code " + std::to_string(idx_dtype) +
              " for k=" + std::to_string(k));
  if (n == 0) {
    std::fill(counts, counts + k, int64_t{0});
    std::fill(sums, sums + k, 0.0);
    return;
  }
  auto fn = hist_scalar;
  Isa isa = isa_for(w_dtype);
  if (isa == Isa::kAvx512)
    fn = hist_avx512;
  else if (isa == Isa::kAvx2)
    fn = hist_avx2;

  // Each thread owns copies * k (sum, count) pairs; it needs enough elements to amortise zeroing
  // and merging them. Copies break the store-to-load chains of runs of one bin (a chain costs
  // ~10 cycles per element, the scatter ~1.5). For well-spread data they stay within half an L1
  // (more would trade L1 misses for nothing); for runny data they may fill an L2, since only a few
  // bins are hot. Copies sit kpad = k + 4 pairs apart: with k a power of two they would otherwise
  // be 4 KiB-aliased, which the CPU's memory disambiguation treats as conflicts (2-3x slower on
  // constant data). copies * kpad <= 65536 (the vector kernels' u16 offsets).
  const float kmax = static_cast<float>(k - 1);
  const int T = threads_for(n, std::max<int64_t>(1 << 15, 8 * static_cast<int64_t>(k)));
  const int64_t per = n / T;
  const bool runs = same_bin_fraction(w, w_dtype, n, lo, scale, kmax) > 1.0 / 16;
  const int64_t budget = runs ? (1 << 20) : (16 << 10); // bytes of accumulators per thread
  const int64_t kpad = k + 4;
  int copies = 8;
  while (copies > 1 &&
         (copies * kpad * 16 > budget || copies * kpad * 8 > per || copies * kpad > 65536))
    copies >>= 1;
  const int64_t hsize = 2 * copies * kpad; // doubles per thread
  std::unique_ptr<double[]> store(new double[hsize * T]);
  HistArgs a{w, w_dtype, lo, scale, kmax, k, copies, static_cast<int>(kpad), idx, idx_dtype};
#pragma omp parallel num_threads(T)
  {
    int t = omp_get_thread_num();
    double *H = store.get() + hsize * t;
    std::fill(H, H + hsize, 0.0); // first touch by the owning thread
    fn(a, range_start(n, T, t), range_start(n, T, t + 1), H);
  }
  // Fixed merge order (thread, then copy) so a given thread count always gives the same sums.
  const int MT = threads_for(static_cast<int64_t>(k) * copies * T, 1 << 16);
#pragma omp parallel for num_threads(MT) schedule(static)
  for (int64_t bin = 0; bin < k; ++bin) {
    double s = 0.0, c = 0.0;
    for (int t = 0; t < T; ++t)
      for (int cp = 0; cp < copies; ++cp) {
        const double *h = store.get() + hsize * t + (cp * kpad + bin) * 2;
        s += h[0];
        c += h[1];
      }
    sums[bin] = s;
    counts[bin] = static_cast<int64_t>(c);
  }
}

namespace {

template <class IN, class OUT, bool CHECK>
int64_t relabel_t(const IN *in, int64_t n, const int32_t *table, int64_t len, OUT *out) {
  int64_t bad = 0;
  const int T = threads_for(n, 1 << 16);
#pragma omp parallel for num_threads(T) reduction(+ : bad) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(in[i]);
    if (CHECK) {
      // Negative values become huge as uint64: one compare rejects both ends.
      bool ok = static_cast<uint64_t>(v) < static_cast<uint64_t>(len);
      bad += !ok;
      v = ok ? v : 0;
    }
    out[i] = static_cast<OUT>(table[v]);
  }
  return bad;
}

template <class IN, class OUT>
int64_t relabel_check(const void *in, int64_t n, const int32_t *table, int64_t len, void *out) {
  // A table covering every value of the input type needs no per-element check.
  constexpr bool narrow = sizeof(IN) <= 2;
  if (narrow && len > static_cast<int64_t>(std::numeric_limits<IN>::max()))
    return relabel_t<IN, OUT, false>(static_cast<const IN *>(in), n, table, len,
                                     static_cast<OUT *>(out));
  return relabel_t<IN, OUT, true>(static_cast<const IN *>(in), n, table, len,
                                  static_cast<OUT *>(out));
}

template <class IN>
int64_t relabel_out(const void *in, int64_t n, const int32_t *table, int64_t len, void *out,
                    int odt) {
  switch (odt) {
  case kU8:
    return relabel_check<IN, uint8_t>(in, n, table, len, out);
  case kU16:
    return relabel_check<IN, uint16_t>(in, n, table, len, out);
  case kI32:
    return relabel_check<IN, int32_t>(in, n, table, len, out);
  default:
    return relabel_check<IN, int64_t>(in, n, table, len, out);
  }
}

} // namespace

void relabel(const void *idx, int64_t n, int in_dtype, const int32_t *table, int64_t table_len,
             void *out, int out_dtype) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_index_dtype(in_dtype),
        "in_dtype must be uint8/uint16/int32/int64, got code " + std::to_string(in_dtype));
  check(is_index_dtype(out_dtype),
        "out_dtype must be uint8/uint16/int32/int64, got code " + std::to_string(out_dtype));
  check(table_len >= 0, "table_len must be >= 0");
  check_ptr(idx, n, "idx");
  check_ptr(out, n, "out");
  check_ptr(table, table_len, "table");
  if (n == 0)
    return;
  check(table_len > 0, "table is empty: " + std::to_string(n) + " indices cannot be relabelled");
  // Table values must fit the output type, or the relabelled indices would wrap silently.
  const int64_t omax = out_dtype == kU8 ? 255 : out_dtype == kU16 ? 65535 : INT64_MAX;
  if (out_dtype == kU8 || out_dtype == kU16)
    for (int64_t j = 0; j < table_len; ++j)
      check(table[j] >= 0 && table[j] <= omax,
            "table[" + std::to_string(j) + "] = " + std::to_string(table[j]) +
                " does not fit the output dtype (0.." + std::to_string(omax) + ")");
  int64_t bad = 0;
#if defined(__x86_64__) || defined(__i386__)
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (in_dtype == kU8 && out_dtype == kU8 && active_isa() == Isa::kAvx512 && vbmi) {
    uint8_t t8[256] = {}; // entries past table_len stay 0: bad indices read them, never past it
    const int len = static_cast<int>(std::min<int64_t>(table_len, 256));
    for (int j = 0; j < len; ++j)
      t8[j] = static_cast<uint8_t>(table[j]);
    const int T = threads_for(n, 1 << 16);
#pragma omp parallel num_threads(T) reduction(+ : bad)
    {
      const int t = omp_get_thread_num();
      const int64_t b = range_start(n, T, t), e = range_start(n, T, t + 1);
      bad += relabel_u8_vbmi(static_cast<const uint8_t *>(idx) + b, e - b, t8, len,
                             static_cast<uint8_t *>(out) + b);
    }
    check(bad == 0, "idx: " + std::to_string(bad) + " values are negative or >= table_len " +
                        std::to_string(table_len));
    return;
  }
#endif
  switch (in_dtype) {
  case kU8:
    bad = relabel_out<uint8_t>(idx, n, table, table_len, out, out_dtype);
    break;
  case kU16:
    bad = relabel_out<uint16_t>(idx, n, table, table_len, out, out_dtype);
    break;
  case kI32:
    bad = relabel_out<int32_t>(idx, n, table, table_len, out, out_dtype);
    break;
  default:
    bad = relabel_out<int64_t>(idx, n, table, table_len, out, out_dtype);
    break;
  }
  check(bad == 0, "idx: " + std::to_string(bad) + " values are negative or >= table_len " +
                      std::to_string(table_len));
}

void fake_quant(const void *w, int64_t n, int w_dtype, int k, float lo, float scale,
                const float *values, void *out, int out_dtype) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_float_dtype(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check(is_float_dtype(out_dtype),
        "out_dtype must be float32/float16/bfloat16, got code " + std::to_string(out_dtype));
  check(k >= 1 && k <= 65536, "k must be in 1..65536, got " + std::to_string(k));
  check(std::isfinite(lo) && std::isfinite(scale) && scale >= 0.0f,
        "lo must be finite and scale finite and >= 0");
  check(values != nullptr, "values must not be null");
  check_ptr(w, n, "w");
  check_ptr(out, n, "out");
  if (n == 0)
    return;
  // Converting the k values once (with common.h's rounding) makes 16-bit outputs a pure lookup.
  std::vector<uint32_t> v16;
  if (out_dtype != kF32) {
    v16.resize(k);
    for (int j = 0; j < k; ++j)
      v16[j] = out_dtype == kF16 ? f32_to_f16_bits(values[j]) : f32_to_bf16_bits(values[j]);
  }
  FqArgs a{w,
           w_dtype,
           lo,
           scale,
           static_cast<float>(k - 1),
           k,
           values,
           v16.empty() ? nullptr : v16.data(),
           out,
           out_dtype};
  auto fn = fq_scalar;
  Isa isa = isa_for(w_dtype);
  if (isa == Isa::kAvx512)
    fn = fq_avx512;
  else if (isa == Isa::kAvx2)
    fn = fq_avx2;
  const int T = threads_for(n, 1 << 15);
#pragma omp parallel num_threads(T)
  {
    int t = omp_get_thread_num();
    fn(a, range_start(n, T, t), range_start(n, T, t + 1));
  }
}

} // namespace wsq
