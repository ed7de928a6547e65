// LUT family, scalar variant and front: dequantize, row gather (Embedding lookup) and the fused
// LUT matmul y = x @ W^T (+ bias), W = table[packed indices]: argument checks, ISA choice and the
// scalar paths. The SIMD paths are in lut_avx2.cpp / lut_avx512.cpp; dequant and gather write
// identical values on every path. The SIMD matmuls use a fused rows kernel for small batches (each
// group of weights decoded once into registers and used by every x row) and a blocked GEMM for
// larger ones (W decoded one cache-sized tile at a time); no path builds the dense W.
#include <limits>

#include "lut_impl.h"

namespace wsq {
namespace lut_detail {

Isa lut_isa() {
  Isa isa = active_isa();
#if defined(__x86_64__) || defined(__i386__)
  // The AVX-512 LUT kernels need VBMI (vpermb / vpermi2b / vpmultishiftqb) on top of F/BW/VL.
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (isa == Isa::kAvx512 && !vbmi) isa = Isa::kAvx2;
#else
  isa = Isa::kScalar;
#endif
  return isa;
}

void dequant_scalar(const Packed& w, int64_t n, void* out, int dt) {
  for_chunks(n, 16384, [&](int64_t e0, int64_t cnt) {
    for (int64_t e = e0; e < e0 + cnt; ++e) store_float(out, e, w.table[index_at(w, e)], dt);
  });
}

int64_t gather_scalar(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows,
                      int64_t n_rows, void* out, int dt) {
  return gather_driver(num_rows, row_len, rows, n_rows, out, dt, [&](int64_t e0, int64_t cnt, int64_t off) {
    for (int64_t j = 0; j < cnt; ++j) store_float(out, off + j, w.table[index_at(w, e0 + j)], dt);
  });
}


// Dot product with 8 independent partial sums (float32), combined pairwise.
static float dot8(const float* a, const float* b, int64_t K) {
  float s[8] = {};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[k + j] * b[k + j];
  for (int j = 0; k < K; ++k, ++j) s[j] += a[k] * b[k];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void matmul_scalar(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                   const float* bias, float* y, int64_t ldy) {
#pragma omp parallel if (M * N * K >= kParallelWork && N > 1)
  {
    std::vector<float> row(static_cast<size_t>(K));  // one decoded row of W per thread
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) row[k] = w.table[index_at(w, n * K + k)];
      for (int64_t m = 0; m < M; ++m) y[m * ldy + n] = dot8(x + m * ldx, row.data(), K) + (bias ? bias[n] : 0.0f);
    }
  }
}

}  // namespace lut_detail

using lut_detail::Packed;

static void check_common(const char* fn, int64_t n, int bits, int64_t nbytes, const float* table) {
  check(bits >= 1 && bits <= 16, std::string(fn) + ": bits must be in 1..16, got " + std::to_string(bits));
  check(n >= 0, std::string(fn) + ": element count must be >= 0");
  check(n <= (std::numeric_limits<int64_t>::max() - 7) / 16, std::string(fn) + ": element count too large");
  check(nbytes >= packed_bytes(n, bits),
        std::string(fn) + ": packed holds " + std::to_string(nbytes) + " bytes; " + std::to_string(n) +
            " indices at " + std::to_string(bits) + " bits need " + std::to_string(packed_bytes(n, bits)));
  check(table != nullptr, std::string(fn) + ": table is null");
}

static void check_float_dtype(const char* fn, int dt) {
  check(dt == kF32 || dt == kF16 || dt == kBF16,
        std::string(fn) + ": out_dtype must be float32, float16 or bfloat16 (code " + std::to_string(dt) + ")");
}

void lut_dequant(const uint8_t* packed, int64_t nbytes, int64_t n, int bits, const float* table,
                 void* out, int out_dtype) {
  check_common("dequant", n, bits, nbytes, table);
  check_float_dtype("dequant", out_dtype);
  if (n == 0) return;
  const Packed w{packed, nbytes, bits, table};
  switch (lut_detail::lut_isa()) {
    case Isa::kAvx512: lut_detail::dequant_avx512(w, n, out, out_dtype); break;
    case Isa::kAvx2: lut_detail::dequant_avx2(w, n, out, out_dtype); break;
    default: lut_detail::dequant_scalar(w, n, out, out_dtype); break;
  }
}

int64_t lut_gather_rows(const uint8_t* packed, int64_t nbytes, int64_t num_rows, int64_t row_len,
                        int bits, const float* table, const int64_t* rows, int64_t n_rows, void* out,
                        int out_dtype) {
  check(num_rows >= 0 && row_len >= 0 && n_rows >= 0, "gather_rows: sizes must be >= 0");
  check(row_len == 0 || num_rows <= std::numeric_limits<int64_t>::max() / 16 / row_len,
        "gather_rows: num_rows * row_len too large");
  check_common("gather_rows", num_rows * row_len, bits, nbytes, table);
  check_float_dtype("gather_rows", out_dtype);
  if (n_rows == 0) return 0;
  if (row_len == 0) {  // nothing to write, but bad ids are still bad
    int64_t bad = 0;
    for (int64_t i = 0; i < n_rows; ++i) bad += rows[i] < 0 || rows[i] >= num_rows;
    return bad;
  }
  const Packed w{packed, nbytes, bits, table};
  switch (lut_detail::lut_isa()) {
    case Isa::kAvx512: return lut_detail::gather_avx512(w, num_rows, row_len, rows, n_rows, out, out_dtype);
    case Isa::kAvx2: return lut_detail::gather_avx2(w, num_rows, row_len, rows, n_rows, out, out_dtype);
    default: return lut_detail::gather_scalar(w, num_rows, row_len, rows, n_rows, out, out_dtype);
  }
}

void lut_matmul(const float* x, int64_t M, int64_t K, int64_t ldx, const uint8_t* packed,
                int64_t nbytes, int64_t N, int bits, const float* table, const float* bias, float* y,
                int64_t ldy) {
  check(M >= 0 && K >= 0 && N >= 0, "lut_matmul: M, K and N must be >= 0");
  check(bits >= 1 && bits <= 16, "lut_matmul: bits must be in 1..16, got " + std::to_string(bits));
  check(K == 0 || N <= (std::numeric_limits<int64_t>::max() - 7) / 16 / K, "lut_matmul: N * K too large");
  check(nbytes >= packed_bytes(N * K, bits),
        "lut_matmul: packed holds " + std::to_string(nbytes) + " bytes; a " + std::to_string(N) + " x " +
            std::to_string(K) + " matrix at " + std::to_string(bits) + " bits needs " +
            std::to_string(packed_bytes(N * K, bits)));
  check(ldy >= N, "lut_matmul: ldy must be >= N");
  check(M <= 1 || ldx >= 0, "lut_matmul: ldx must be >= 0");
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty sum: y = bias (or 0)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * ldy + n] = bias ? bias[n] : 0.0f;
    return;
  }
  const lut_detail::Packed w{packed, nbytes, bits, table};
  switch (lut_detail::lut_isa()) {
    case Isa::kAvx512: lut_detail::matmul_avx512(w, x, M, K, ldx, N, bias, y, ldy); break;
    case Isa::kAvx2: lut_detail::matmul_avx2(w, x, M, K, ldx, N, bias, y, ldy); break;
    default: lut_detail::matmul_scalar(w, x, M, K, ldx, N, bias, y, ldy); break;
  }
}

}  // namespace wsq
