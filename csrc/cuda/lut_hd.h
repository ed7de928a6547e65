// Per-lane pieces of the CUDA LUT matmul kernels, host and device alike, so that the CPU build
// (csrc/testing/cuda_host_emu.h) runs the very arithmetic and addressing the GPU runs.
//
// float32 path (csrc/cuda/lut_gemv.cuh): one lane owns 32 consecutive k of R rows of W (B words
// each) and the matching 32 x values of MT rows of x in padded shared memory.
// Tensor-core path (csrc/cuda/lut_tc.cu): one lane's mma.m16n8k16 fragments (see tc_phys_k in
// group_hd.h for the k order).
#pragma once
#include <cmath>
#include <cstdint>

#include "../common.h"
#include "group_hd.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

// Full unrolling (register arrays indexed by loop counters) in the device pass only; host
// compilers would warn about the unknown pragma.
#if defined(__CUDA_ARCH__)
#define WSQ_UNROLL _Pragma("unroll")
#else
#define WSQ_UNROLL
#endif

namespace wsq {

// Rows of W per warp: enough x reuse, R * B words in flight per lane, and registers in check
// (the lane holds R x MT accumulators).
WSQ_HD constexpr int gemv_rows_per_warp(int b, int mt) {
  return (b <= 4   ? 8
          : b <= 8 ? 4
                   : 2) < (mt == 8 ? 4 : 8)
             ? (b <= 4   ? 8
                : b <= 8 ? 4
                         : 2)
             : (mt == 8 ? 4 : 8);
}
// Where the table lives: 0 = 32 copies, one per bank (<= 8 bits: entry e of lane l at e * 32 + l);
// 1 = one shared copy (<= 13 bits); 2 = global memory through the read-only cache.
WSQ_HD constexpr int gemv_table_mode(int b) { return b <= 8 ? 0 : b <= 13 ? 1 : 2; }
WSQ_HD constexpr int gemv_table_floats(int b) {
  return gemv_table_mode(b) == 0 ? (32 << b) : gemv_table_mode(b) == 1 ? (1 << b) : 0;
}

// Shared-memory position of x element kk (0..1023) of a slice: 4 floats of padding after every
// 32, so a lane's 16-byte reads (lane * 36 + 4c) fall in distinct banks across a quarter warp.
WSQ_HD int gemv_xs_off(int kk) { return kk + (kk >> 5) * 4; }
constexpr int kGemvXS = 1024 + 1024 / 8; // padded floats per x row of a slice

// First 32-bit word of the lane's B words: row `row` of a K-column matrix, k = kl (kl % 32 == 0).
WSQ_HD int64_t gemv_word(int64_t row, int64_t K, int64_t kl, int bits) {
  return row * (K / 32) * bits + (kl / 32) * bits;
}

template <int TM>
WSQ_HD float gemv_look(const float *tab, const float *gtab, uint32_t idx, int lane) {
  if (TM == 0)
    return tab[idx * 32 + lane];
  if (TM == 1)
    return tab[idx];
#if defined(__CUDA_ARCH__)
  return __ldg(gtab + idx);
#else
  return gtab[idx];
#endif
}

// acc[r][m] += sum over the lane's 32 k of W[r][k] * x[m][k], in k order, one fmaf each.
// wr: R rows x B words; xl: this lane's x (xs + lane * 36), rows kGemvXS apart.
template <int B, int MT, int R, int TM>
WSQ_HD void gemv_lane(const uint32_t (*wr)[B], const float *xl, const float *tab, const float *gtab,
                      int lane, float (*acc)[MT]) {
  WSQ_UNROLL
  for (int c = 0; c < 8; ++c) {
    float xv[MT][4];
    WSQ_UNROLL
    for (int m = 0; m < MT; ++m) {
#if defined(__CUDA_ARCH__)
      const float4 v = *reinterpret_cast<const float4 *>(xl + m * kGemvXS + 4 * c);
      xv[m][0] = v.x;
      xv[m][1] = v.y;
      xv[m][2] = v.z;
      xv[m][3] = v.w;
#else
      for (int q = 0; q < 4; ++q)
        xv[m][q] = xl[m * kGemvXS + 4 * c + q];
#endif
    }
    WSQ_UNROLL
    for (int r = 0; r < R; ++r) {
      WSQ_UNROLL
      for (int q = 0; q < 4; ++q) {
        const float wv = gemv_look<TM>(tab, gtab, words_get<B>(wr[r], 4 * c + q), lane);
        WSQ_UNROLL
        for (int m = 0; m < MT; ++m)
          acc[r][m] = fmaf(wv, xv[m][q], acc[r][m]);
      }
    }
  }
}

// bf16 pair (lo in the low half), round to nearest even: the bits mma.sync reads.
WSQ_HD uint32_t bf16x2_bits(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // one cvt; same rounding as below
  return *reinterpret_cast<const uint32_t *>(&v);
#else
  return static_cast<uint32_t>(f32_to_bf16_bits(lo)) |
         (static_cast<uint32_t>(f32_to_bf16_bits(hi)) << 16);
#endif
}

// The A fragments (two k16 steps x 4 registers) of lane (g, t) = (lane / 4, lane % 4) for rows g
// (group ga) and g + 8 (group gb) of a strip: group element i is physical k 8t + i, and
//   a[s][0] = rows g, k 2t+{0,1};  a[s][1] = row g+8, same k;  a[s][2] = row g, k 2t+8+{0,1};
//   a[s][3] = row g+8, same k  (logical k of step s; physical 8t + 4s + {0,1} / + {2,3}).
template <int B>
WSQ_HD void tc_a_frags(Group ga, Group gb, const float *tab, int lane, uint32_t (*a)[4]) {
  float wa[8], wb[8];
  WSQ_UNROLL
  for (int i = 0; i < 8; ++i) {
    wa[i] = tab[group_get(ga, i, B) * 32 + lane];
    wb[i] = tab[group_get(gb, i, B) * 32 + lane];
  }
  WSQ_UNROLL
  for (int s = 0; s < 2; ++s) {
    a[s][0] = bf16x2_bits(wa[4 * s], wa[4 * s + 1]);
    a[s][1] = bf16x2_bits(wb[4 * s], wb[4 * s + 1]);
    a[s][2] = bf16x2_bits(wa[4 * s + 2], wa[4 * s + 3]);
    a[s][3] = bf16x2_bits(wb[4 * s + 2], wb[4 * s + 3]);
  }
}

// Accumulator element e (0..3) of lane: strip row (0..15) and column (x row within the n8 tile).
WSQ_HD void tc_c_pos(int lane, int e, int *row, int *col) {
  *row = (lane >> 2) + (e < 2 ? 0 : 8);
  *col = 2 * (lane & 3) + (e & 1);
}

} // namespace wsq
