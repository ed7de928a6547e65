// Tensor-core LUT matmul (mode 1 of lut.cuh): bf16 mma.sync with float32 accumulation, W decoded
// from packed indices straight into mma fragments. Internal to the CUDA module.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace wsq::cuda {

// M > 8 (smaller batches are memory-bound: the exact GEMV is as fast), bits <= 8, K % 32 == 0.
bool tc_supported(int64_t M, int64_t K, int64_t N, int bits);
int64_t tc_workspace_bytes(int64_t M, int64_t K, int64_t N);
// Needs a 16-byte aligned stream (checked by the caller) and tc_workspace_bytes of ws.
void tc_matmul(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed, int64_t N,
               int bits, const float *table, const float *bias, float *y, int64_t ldy, void *ws,
               cudaStream_t s);

} // namespace wsq::cuda
