// The float32 LUT GEMV/GEMM kernel template (see lut_matmul.cu for the design). Instantiated per
// batch tile MT in lut_gemv_mt*.cu so the 16 bit widths x 4 tiles compile in parallel.
#pragma once
#include <cstdint>
#include <utility>

#include "group_hd.h"
#include "lut_hd.h"
#include "device.cuh"

namespace wsq::cuda::gemv {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kKS = 1024;    // k per slice: 32 lanes x 32 indices
constexpr int kXS = kGemvXS; // padded x row: 4 floats after every 32 (conflict-free LDS.128)
constexpr int kGenericRows = 4;

struct MM {
  const float *x;
  int64_t M, K, ldx;
  const uint8_t *w;
  int64_t nbytes, N;
  int bits;
  const float *table;
  const float *bias;
  float *y;
  int64_t ldy;
  float *part;         // [mtiles][S][MT][N] split-K partial sums (S > 1)
  unsigned int *count; // [mtiles][NB] finished slices per row block, zeroed before the launch
  int S;
  int64_t NB, mtiles;
};

template <int B> __device__ __forceinline__ void load_words(const uint32_t *p, uint32_t *w) {
  if constexpr (B % 4 == 0) {
#pragma unroll
    for (int i = 0; i < B; i += 4) {
      const uint4 v = *reinterpret_cast<const uint4 *>(p + i);
      w[i] = v.x;
      w[i + 1] = v.y;
      w[i + 2] = v.z;
      w[i + 3] = v.w;
    }
  } else if constexpr (B % 2 == 0) {
#pragma unroll
    for (int i = 0; i < B; i += 2) {
      const uint2 v = *reinterpret_cast<const uint2 *>(p + i);
      w[i] = v.x;
      w[i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < B; ++i)
      w[i] = p[i];
  }
}

// B: bits (fast path) or 0 (generic path, bits at run time).
template <int B, int MT> __global__ void __launch_bounds__(kThreads) gemv_kernel(MM p) {
  constexpr bool FAST = B > 0;
  constexpr int R = FAST ? gemv_rows_per_warp(B, MT) : kGenericRows;
  constexpr int RB = R * kWarps;
  constexpr int TM = FAST ? gemv_table_mode(B) : 2;
  extern __shared__ float sm[];
  float *xs = sm;             // [MT][kXS]
  float *tab = sm + MT * kXS; // TM 0: [2^B][32]; TM 1: [2^B]
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (TM == 0)
    for (int e = threadIdx.x; e < (32 << B); e += kThreads)
      tab[e] = p.table[e >> 5];
  if (TM == 1)
    for (int e = threadIdx.x; e < (1 << B); e += kThreads)
      tab[e] = p.table[e];

  const int64_t tiles = p.mtiles * p.NB * p.S;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int s = static_cast<int>(t % p.S); // slices fastest: neighbouring blocks read whole rows
    const int64_t nb = (t / p.S) % p.NB;
    const int64_t mt = t / (p.S * p.NB);
    const int64_t m0 = mt * MT, k0 = static_cast<int64_t>(s) * kKS;
    __syncthreads(); // the previous tile is done with xs (and the table is written)
    for (int i = threadIdx.x; i < MT * kKS; i += kThreads) {
      const int m = i / kKS, kk = i % kKS;
      const int64_t k = k0 + kk;
      xs[m * kXS + gemv_xs_off(kk)] = (m0 + m < p.M && k < p.K) ? p.x[(m0 + m) * p.ldx + k] : 0.0f;
    }
    __syncthreads();

    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m)
        acc[r][m] = 0.0f;
    const int64_t row0 = nb * RB + warp * R;
    const int64_t kl = k0 + lane * 32; // the lane's first k
    if constexpr (FAST) {
      uint32_t wr[R][FAST ? B : 1];
      const uint32_t *W = reinterpret_cast<const uint32_t *>(p.w);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (row0 + r < p.N && kl < p.K) {
          load_words<B>(W + gemv_word(row0 + r, p.K, kl, B), wr[r]);
        } else {
#pragma unroll
          for (int i = 0; i < B; ++i)
            wr[r][i] = 0u; // index 0: finite in any table; unused rows
        }
      }
      gemv_lane<B, MT, R, TM>(wr, xs + lane * 36, tab, p.table, lane, acc);
    } else {
      for (int j = 0; j < 32 && kl + j < p.K; ++j) {
        float xv[MT];
#pragma unroll
        for (int m = 0; m < MT; ++m)
          xv[m] = xs[m * kXS + gemv_xs_off(lane * 32 + j)];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (row0 + r < p.N) {
            const uint32_t idx = read_packed(p.w, p.nbytes, (row0 + r) * p.K + kl + j, p.bits);
            const float wv = __ldg(p.table + idx);
#pragma unroll
            for (int m = 0; m < MT; ++m)
              acc[r][m] = fmaf(wv, xv[m], acc[r][m]);
          }
        }
      }
    }

#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m)
        acc[r][m] = warp_sum(acc[r][m]);

    // Lane v % 32 writes value v = r * MT + m (compile-time r, m: acc stays in registers).
#pragma unroll
    for (int v = 0; v < R * MT; ++v) {
      const int r = v / MT, m = v % MT;
      const int64_t row = row0 + r;
      if (lane == (v & 31) && row < p.N && m0 + m < p.M) {
        if (p.S == 1)
          p.y[(m0 + m) * p.ldy + row] = acc[r][m] + (p.bias ? p.bias[row] : 0.0f);
        else
          p.part[((mt * p.S + s) * MT + m) * p.N + row] = acc[r][m];
      }
    }
    if (p.S > 1) {
      __threadfence(); // partials visible device-wide before the slice is counted
      __syncthreads();
      if (threadIdx.x == 0)
        last = atomicAdd(&p.count[mt * p.NB + nb], 1u) == static_cast<unsigned>(p.S - 1);
      __syncthreads();
      if (last) {
        __threadfence();
        for (int i = threadIdx.x; i < RB * MT; i += kThreads) {
          const int m = i / RB;
          const int64_t row = nb * RB + i % RB;
          if (row >= p.N || m0 + m >= p.M)
            continue;
          float v = 0.0f;
          for (int s2 = 0; s2 < p.S; ++s2)
            v += __ldcg(p.part + ((mt * p.S + s2) * MT + m) * p.N + row);
          p.y[(m0 + m) * p.ldy + row] = v + (p.bias ? p.bias[row] : 0.0f);
        }
      }
    }
  }
}

using GemvFn = void (*)(MM);

// The fast-path kernel for `bits` (1..16) at batch tile MT, and the generic one.
template <int MT, int... Bs> GemvFn pick_fast(int bits, std::integer_sequence<int, Bs...>) {
  constexpr GemvFn fns[] = {gemv_kernel<Bs + 1, MT>...};
  return fns[bits - 1];
}

#define WSQ_GEMV_INSTANCE(MT)                                                                      \
  GemvFn fast_kernel_mt##MT(int bits) {                                                            \
    return pick_fast<MT>(bits, std::make_integer_sequence<int, 16>{});                             \
  }                                                                                                \
  GemvFn generic_kernel_mt##MT() { return gemv_kernel<0, MT>; }

GemvFn fast_kernel_mt1(int bits);
GemvFn fast_kernel_mt2(int bits);
GemvFn fast_kernel_mt4(int bits);
GemvFn fast_kernel_mt8(int bits);
GemvFn generic_kernel_mt1();
GemvFn generic_kernel_mt2();
GemvFn generic_kernel_mt4();
GemvFn generic_kernel_mt8();

} // namespace wsq::cuda::gemv
