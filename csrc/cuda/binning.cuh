// CUDA binning kernels: min/max, the fused bin + count + sum (+ index) pass, relabel, and fused
// fake-quant. Same C ABI as csrc/cpu/binning.h (raw device pointers, dtype codes) plus the stream.
// No call synchronises the device; argument errors raise std::invalid_argument (ValueError).
//
// Differences from the CPU kernels, by design (no synchronisation inside an op):
// - minmax writes (lo, hi, nonfinite) as 3 float64 into `out` (device memory) instead of returning
//   them; the Python wrapper reads them when it needs them.
// - relabel does not validate: an index outside [0, table_len) is written as 0 (the CPU raises).
// - histogram needs `ws` (histogram_workspace_bytes(k) bytes of device memory) and its sums are
//   exact fixed-point totals (fixsum_hd.h), bitwise identical from run to run, clamped outliers
//   and NaN/Inf included (integer per-exponent sums, not float atomics); the CPU sums in
//   float64 in thread order, so the two agree to float64 rounding, not always bit for bit.
#pragma once
#include <cstdint>

namespace wsq::cuda {

void minmax(const void *w, int64_t n, int w_dtype, double *out, std::uintptr_t stream);

int64_t histogram_workspace_bytes(int k);

// Shared-memory strategy (documented for the benchmarks): k <= 16 per-thread private slots (no
// atomics, no contention on tiny k); larger k one shared histogram per block with 64-bit integer
// shared atomics, merged into the global totals once per block; when k bins do not fit one block's
// shared memory, several passes over w each cover a range of bins (indices written in the first).
void histogram(const void *w, int64_t n, int w_dtype, int k, float lo, float scale, int64_t *counts,
               double *sums, void *idx, int idx_dtype, void *ws, std::uintptr_t stream);

void relabel(const void *idx, int64_t n, int in_dtype, const int32_t *table, int64_t table_len,
             void *out, int out_dtype, std::uintptr_t stream);

void fake_quant(const void *w, int64_t n, int w_dtype, int k, float lo, float scale,
                const float *values, void *out, int out_dtype, std::uintptr_t stream);

} // namespace wsq::cuda
