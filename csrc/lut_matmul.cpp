// Fused LUT matmul y = x @ W^T (+ bias), W = table[packed indices]: argument checks, ISA choice and
// the scalar path. The SIMD paths (lut_avx2.cpp, lut_avx512.cpp) use a fused rows kernel for small
// batches (each group of weights decoded once into registers and used by every x row) and a blocked
// GEMM for larger ones (W decoded one cache-sized tile at a time); no path builds the dense W.
#include <limits>

#include "lut_impl.h"

namespace wsq {
namespace lut_detail {

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
