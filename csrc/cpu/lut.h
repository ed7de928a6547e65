// Codebook lookup kernels (issue 2, kernel 5): dequantize packed indices, the fused LUT matmul
// y = x @ W^T with W = table[indices] read straight from the packed stream, and row gather
// (Embedding lookup).
//
// Layout (csrc/common.h): LSB-first dense packing; a matrix W of N rows x K cols is one stream in
// row-major order, element (r, c) = index r*K + c, so a row starts at bit r*K*b, not necessarily on
// a byte boundary. `table` always has exactly 2^bits float32 entries (the codebook padded with NaN
// by wsq.kernels.ops.lut_table), so every b-bit index is in bounds and an index past the codebook reads NaN.
//
// Paths (wsq::lut_detail::lut_isa): scalar, AVX2 and AVX-512. The AVX-512 kernels also use VBMI byte
// permutes (5..8-bit tables held in registers as byte planes), so a CPU with AVX-512 F/BW/VL but no
// VBMI (Skylake-SP, Cascade Lake) runs the AVX2 kernels. All paths give the same dequantized values
// bit for bit; matmul sums differ between paths only in the order of float32 additions. Within one
// path that order depends on the shape and the batch, never on the width: a tensor held at fewer
// bits (wsq's per-tensor runtime widths) computes exactly what it computes at 16.
#pragma once
#include <cstdint>

#include "cpu_features.h"

namespace wsq {

// out[i] = table[index i] for the n indices of `packed` (nbytes >= ceil(n*bits/8)), written as
// kF32 / kF16 / kBF16 (round to nearest even, NaN kept).
void lut_dequant(const uint8_t* packed, int64_t nbytes, int64_t n, int bits, const float* table,
                 void* out, int out_dtype);

// y (M x N, row stride ldy) = x (M x K, row stride ldx, unit column stride) @ W^T (+ bias[N] if
// bias != nullptr), W (N x K) = table[packed indices]. Accumulates in float32. Any M, K, N >= 0.
void lut_matmul(const float* x, int64_t M, int64_t K, int64_t ldx, const uint8_t* packed,
                int64_t nbytes, int64_t N, int bits, const float* table, const float* bias, float* y,
                int64_t ldy);

// out row i (row_len values, out_dtype) = row rows[i] of the packed (num_rows x row_len) matrix.
// Row ids outside [0, num_rows) are never read: their output row is NaN and they are counted in
// the return value (the Python layer raises IndexError when it is not 0).
int64_t lut_gather_rows(const uint8_t* packed, int64_t nbytes, int64_t num_rows, int64_t row_len,
                        int bits, const float* table, const int64_t* rows, int64_t n_rows, void* out,
                        int out_dtype);

// ---- internal: per-ISA kernels (lut_avx2.cpp, lut_avx512.cpp; scalar in lut.cpp). The public functions above check arguments and pick one.
namespace lut_detail {

struct Packed {
  const uint8_t* p;
  int64_t nbytes;
  int bits;
  const float* table;  // 2^bits entries
};

// The level the LUT kernels use now: active_isa(), with AVX-512 lowered to AVX2 without VBMI.
Isa lut_isa();

void dequant_scalar(const Packed& w, int64_t n, void* out, int dt);
void dequant_avx2(const Packed& w, int64_t n, void* out, int dt);
void dequant_avx512(const Packed& w, int64_t n, void* out, int dt);

int64_t gather_scalar(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows,
                      int64_t n_rows, void* out, int dt);
int64_t gather_avx2(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows,
                    int64_t n_rows, void* out, int dt);
int64_t gather_avx512(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows,
                      int64_t n_rows, void* out, int dt);

// M, K, N > 0 here (lut_matmul handles the empty cases).
void matmul_scalar(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                   const float* bias, float* y, int64_t ldy);
void matmul_avx2(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                 const float* bias, float* y, int64_t ldy);
void matmul_avx512(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                   const float* bias, float* y, int64_t ldy);

}  // namespace lut_detail
}  // namespace wsq
