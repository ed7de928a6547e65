// CUDA codebook-lookup kernels: dequantize, row gather (Embedding lookup) and the LUT matmul that
// reads packed indices directly. Same C ABI as csrc/cpu/lut.h (device pointers) plus the stream.
// `table` always has 2^bits float32 entries (wsq.kernels.ops.lut_table), so no index can read past it.
//
// Differences from the CPU kernels, by design (no synchronisation inside an op): gather_rows
// counts nothing; a row id outside [0, num_rows) gives a NaN row, as on the CPU, but no error.
#pragma once
#include <cstdint>

namespace wsq::cuda {

void dequant(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, const float *table,
             void *out, int out_dtype, std::uintptr_t stream);

void gather_rows(const uint8_t *packed, int64_t nbytes, int64_t num_rows, int64_t row_len, int bits,
                 const float *table, const int64_t *rows, int64_t n_rows, void *out, int out_dtype,
                 std::uintptr_t stream);

// Matmul paths (mode):
//   0  exact: float32 FMA, for any shape. M <= 8 is the small-batch GEMV (all M rows of x share
//      each decoded weight); larger M runs tiles of 8 rows of x. Split-K partial sums are reduced
//      in a fixed order by the last block of each row block, so results are bitwise repeatable.
//   1  tensor cores (bf16 inputs, float32 accumulation), used by wsq/kernels/cuda.py when torch's
//      float32 matmul precision is "medium" (torch itself then runs float32 matmuls in bf16);
//      needs K % 32 == 0, bits <= 8 and a 16-byte aligned stream, else falls back to mode 0.
// `ws` must hold lut_matmul_workspace_bytes(M, K, N, bits, mode) bytes of device memory.
int64_t lut_matmul_workspace_bytes(int64_t M, int64_t K, int64_t N, int bits, int mode);

void lut_matmul(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed,
                int64_t nbytes, int64_t N, int bits, const float *table, const float *bias,
                float *y, int64_t ldy, void *ws, int64_t ws_bytes, int mode, std::uintptr_t stream);

} // namespace wsq::cuda
