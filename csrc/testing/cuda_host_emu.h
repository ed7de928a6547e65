// Host emulations of the CUDA kernels' per-element and per-group logic, built by the plain C++
// compiler from the same __host__ __device__ functions the kernels use (../cuda/fixsum_hd.h,
// ../cuda/group_hd.h, ../common.h). They follow the kernels' structure (pieces folded every 2^16
// elements, partials capped, 128-bit totals; whole groups plus one partial group) so the tests on a
// machine without a GPU check the arithmetic the GPU runs. Sequential and simple on purpose.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common.h"
#include "../cuda/fixsum_hd.h"
#include "../cuda/group_hd.h"
#include "../cuda/lut_hd.h"

namespace wsq::cuda::emu {

// An outlier (|w| >= limit, NaN, Inf) of end bin b into the 2 x kOutSlots words, as hist_kernel adds
// it (an integer add, so the order of the elements cannot change the words).
inline void add_outlier(uint64_t *out, int b, float v) {
  uint64_t a;
  const int slot = fixsum_out_slot(v, &a);
  out[(b == 0 ? 0 : kOutSlots) + slot] += a;
}

// The outlier part of bin r's sum, as hist_finish computes it.
inline double outlier_total(const uint64_t *out, int r, int k) {
  if (r == 0)
    return fixsum_out_total(out);
  return r == k - 1 ? fixsum_out_total(out + kOutSlots) : 0.0;
}

// The histogram exactly as hist_kernel accumulates it (shared mode), with `block` elements per
// simulated block (<= kFixMaxPartial): counts (int64) and sums (float64) of k bins.
inline void histogram(const float *w, int64_t n, int k, float lo, float scale, int64_t block,
                      int64_t *counts, double *sums) {
  check(block >= 1 && block <= kFixMaxPartial, "block must be in 1..2^24-1");
  const FixSum fx = fixsum_params(lo, scale, k);
  const float kmax = static_cast<float>(k - 1);
  std::vector<uint64_t> thi(k, 0), tlo(k, 0), cnt(k, 0);
  std::vector<uint64_t> out(2 * kOutSlots, 0); // outliers of bin 0, then bin k-1, as the kernel
  std::vector<uint64_t> A(k), B(k);
  std::vector<uint32_t> pc(k), p0(k), p1(k), p2(k);
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = b0 + block < n ? b0 + block : n;
    std::fill(A.begin(), A.end(), 0);
    std::fill(B.begin(), B.end(), 0);
    auto fold = [&] {
      for (int r = 0; r < k; ++r) {
        if (pc[r] == 0)
          continue;
        fixsum_fold(pc[r], p0[r], p1[r], p2[r], &A[r], &B[r]);
        pc[r] = p0[r] = p1[r] = p2[r] = 0;
      }
    };
    std::fill(pc.begin(), pc.end(), 0);
    std::fill(p0.begin(), p0.end(), 0);
    std::fill(p1.begin(), p1.end(), 0);
    std::fill(p2.begin(), p2.end(), 0);
    for (int64_t i = b0; i < b1; ++i) {
      const float v = w[i];
      const int b = std::isnan(v) ? 0 : bin_index(v, lo, scale, kmax); // the device's NaN -> 0
      int64_t x = 0;
      if (fixsum_ok(v, fx.limit))
        x = fixsum_value(v, fx.mul);
      else
        add_outlier(out.data(), b, v);
      pc[b] += 1u;
      p0[b] += fixsum_p0(x);
      p1[b] += fixsum_p1(x);
      p2[b] += fixsum_p2(x);
      if ((i - b0 + 1) % 65536 == 0)
        fold();
    }
    fold();
    for (int r = 0; r < k; ++r) {
      if (A[r] == 0)
        continue;
      cnt[r] += static_cast<uint64_t>(fixsum_count(A[r]));
      uint64_t hi, lo64;
      fixsum_partial(A[r], B[r], &hi, &lo64);
      add128(&thi[r], &tlo[r], hi, lo64);
    }
  }
  for (int r = 0; r < k; ++r) {
    counts[r] = static_cast<int64_t>(cnt[r]);
    sums[r] = fixsum_to_double(thi[r], tlo[r], fx.shift) + outlier_total(out.data(), r, k);
  }
}

// The per-thread private-slot variant (k <= 16 on the GPU): (A, B) partials directly.
inline void histogram_private(const float *w, int64_t n, int k, float lo, float scale,
                              int64_t *counts, double *sums) {
  const FixSum fx = fixsum_params(lo, scale, k);
  const float kmax = static_cast<float>(k - 1);
  std::vector<uint64_t> A(k, 0), B(k, 0), thi(k, 0), tlo(k, 0);
  std::vector<uint64_t> out(2 * kOutSlots, 0);
  check(n <= kFixMaxPartial, "histogram_private: n must be < 2^24");
  for (int64_t i = 0; i < n; ++i) {
    const float v = w[i];
    const int b = std::isnan(v) ? 0 : bin_index(v, lo, scale, kmax);
    int64_t x = 0;
    if (fixsum_ok(v, fx.limit))
      x = fixsum_value(v, fx.mul);
    else
      add_outlier(out.data(), b, v);
    A[b] += fixsum_a(x);
    B[b] += fixsum_b(x);
  }
  for (int r = 0; r < k; ++r) {
    uint64_t hi = 0, lo64 = 0;
    fixsum_partial(A[r], B[r], &hi, &lo64);
    add128(&thi[r], &tlo[r], hi, lo64);
    counts[r] = fixsum_count(A[r]);
    sums[r] = fixsum_to_double(thi[r], tlo[r], fx.shift) + outlier_total(out.data(), r, k);
  }
}

// pack / unpack / remap in whole groups plus the partial tail group, as the kernels do.
inline void pack(const int64_t *idx, int64_t n, int bits, uint8_t *out) {
  const int64_t groups = n / 8;
  auto valid = [&](int64_t v) {
    return (v >= 0 && v < (int64_t{1} << bits)) ? static_cast<uint32_t>(v) : 0u;
  };
  for (int64_t g = 0; g <= groups; ++g) {
    const int r = g < groups ? 8 : static_cast<int>(n - 8 * groups);
    if (r == 0)
      break;
    Group x{0, 0};
    for (int j = 0; j < r; ++j)
      group_put(&x, j, bits, valid(idx[8 * g + j]));
    group_to_bytes(x, out + g * bits,
                   static_cast<int>(g < groups ? bits : packed_bytes(n, bits) - g * bits));
  }
}

inline void unpack(const uint8_t *in, int64_t nbytes, int64_t n, int bits, int64_t *out) {
  const int64_t groups = (n + 7) / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t avail = nbytes - g * bits;
    const Group x = group_from_bytes(in + g * bits, static_cast<int>(avail < bits ? avail : bits));
    for (int j = 0; j < 8 && 8 * g + j < n; ++j)
      out[8 * g + j] = group_get(x, j, bits);
  }
}

inline void remap(const uint8_t *in, int64_t nbytes, int64_t n, int bits_in, const int32_t *table,
                  int64_t tn, uint8_t *out, int bits_out) {
  const uint32_t omask = (1u << bits_out) - 1u;
  const int64_t groups = (n + 7) / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t avail = nbytes - g * bits_in;
    const Group a =
        group_from_bytes(in + g * bits_in, static_cast<int>(avail < bits_in ? avail : bits_in));
    Group b{0, 0};
    for (int j = 0; j < 8 && 8 * g + j < n; ++j) {
      const uint32_t v = group_get(a, j, bits_in);
      group_put(&b, j, bits_out, v < tn ? static_cast<uint32_t>(table[v]) & omask : 0u);
    }
    const int64_t nb = (g + 1) * 8 <= n ? bits_out : packed_bytes(n, bits_out) - g * bits_out;
    group_to_bytes(b, out + g * bits_out, static_cast<int>(nb));
  }
}

// The LUT matmul fast path's decode: 32 indices from `bits` little-endian words (one lane's share).
template <int B> inline void words_decode(const uint32_t *w, uint32_t *out) {
  for (int j = 0; j < 32; ++j)
    out[j] = words_get<B>(w, j);
}

inline void words_decode_any(const uint32_t *w, int bits, uint32_t *out) {
  switch (bits) {
  case 1:
    words_decode<1>(w, out);
    break;
  case 2:
    words_decode<2>(w, out);
    break;
  case 3:
    words_decode<3>(w, out);
    break;
  case 4:
    words_decode<4>(w, out);
    break;
  case 5:
    words_decode<5>(w, out);
    break;
  case 6:
    words_decode<6>(w, out);
    break;
  case 7:
    words_decode<7>(w, out);
    break;
  case 8:
    words_decode<8>(w, out);
    break;
  case 9:
    words_decode<9>(w, out);
    break;
  case 10:
    words_decode<10>(w, out);
    break;
  case 11:
    words_decode<11>(w, out);
    break;
  case 12:
    words_decode<12>(w, out);
    break;
  case 13:
    words_decode<13>(w, out);
    break;
  case 14:
    words_decode<14>(w, out);
    break;
  case 15:
    words_decode<15>(w, out);
    break;
  default:
    words_decode<16>(w, out);
    break;
  }
}

// The float32 LUT matmul's fast path (K % 32 == 0) exactly as lut_gemv.cuh computes it: same tiles,
// same per-lane fmaf order (gemv_lane), the warp's xor-shuffle tree, split-K partials added in
// slice order. The GPU result must equal this bit for bit.
template <int B, int MT>
inline void gemv_fast(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed,
                      int64_t N, const float *table, const float *bias, float *y, int64_t ldy) {
  constexpr int R = gemv_rows_per_warp(B, MT), RB = 8 * R, TM = gemv_table_mode(B);
  const int S = static_cast<int>((K + 1023) / 1024);
  std::vector<float> tab(gemv_table_floats(B) > 0 ? gemv_table_floats(B) : 1);
  for (int e = 0; e < gemv_table_floats(B); ++e)
    tab[e] = TM == 0 ? table[e >> 5] : table[e];
  std::vector<float> xs(MT * kGemvXS), part(static_cast<size_t>(S) * MT * RB);
  for (int64_t m0 = 0; m0 < M; m0 += MT) {
    for (int64_t row_b = 0; row_b < N; row_b += RB) {
      for (int s = 0; s < S; ++s) {
        const int64_t k0 = int64_t{s} * 1024;
        for (int m = 0; m < MT; ++m)
          for (int kk = 0; kk < 1024; ++kk)
            xs[m * kGemvXS + gemv_xs_off(kk)] =
                (m0 + m < M && k0 + kk < K) ? x[(m0 + m) * ldx + k0 + kk] : 0.0f;
        for (int warp = 0; warp < 8; ++warp) {
          const int64_t row0 = row_b + warp * R;
          float lane_acc[32][R][MT];
          for (int lane = 0; lane < 32; ++lane) {
            const int64_t kl = k0 + lane * 32;
            uint32_t wr[R][B];
            for (int r = 0; r < R; ++r) {
              if (row0 + r < N && kl < K)
                std::memcpy(wr[r], packed + 4 * gemv_word(row0 + r, K, kl, B), 4 * B);
              else
                std::memset(wr[r], 0, 4 * B);
            }
            float acc[R][MT] = {};
            gemv_lane<B, MT, R, TM>(wr, xs.data() + lane * 36, tab.data(), table, lane, acc);
            std::memcpy(lane_acc[lane], acc, sizeof(acc));
          }
          for (int r = 0; r < R; ++r) {
            for (int m = 0; m < MT; ++m) {
              float v[32];
              for (int l = 0; l < 32; ++l)
                v[l] = lane_acc[l][r][m];
              for (int o = 16; o > 0; o >>= 1) { // warp_sum: v += shfl_xor(v, o)
                float nv[32];
                for (int l = 0; l < 32; ++l)
                  nv[l] = v[l] + v[l ^ o];
                std::memcpy(v, nv, sizeof(v));
              }
              const int64_t row = row0 + r;
              if (row >= N || m0 + m >= M)
                continue;
              if (S == 1)
                y[(m0 + m) * ldy + row] = v[0] + (bias ? bias[row] : 0.0f);
              else
                part[(static_cast<size_t>(s) * MT + m) * RB + (row - row_b)] = v[0];
            }
          }
        }
      }
      if (S > 1) {
        for (int m = 0; m < MT && m0 + m < M; ++m) {
          for (int64_t row = row_b; row < row_b + RB && row < N; ++row) {
            float v = 0.0f;
            for (int s = 0; s < S; ++s)
              v += part[(static_cast<size_t>(s) * MT + m) * RB + (row - row_b)];
            y[(m0 + m) * ldy + row] = v + (bias ? bias[row] : 0.0f);
          }
        }
      }
    }
  }
}

// The tensor-core path's fragments (tc_a_frags, the kernel's x order, tc_c_pos) pushed through an
// emulated mma.m16n8k16 whose register layout is written out from the PTX ISA: A reg r half h of
// lane (g, t) is A[g + 8 (r & 1)][2t + h + 8 (r >> 1)]; B reg r half h is B[2t + h + 8r][g];
// C element e is C[g + 8 (e >> 1)][2t + (e & 1)]. Products of bf16 values summed in float64.
template <int B>
inline void tc_emulate(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed,
                       int64_t N, const float *table, const float *bias, float *y, int64_t ldy) {
  std::vector<float> tab(32 << B);
  for (int e = 0; e < (32 << B); ++e)
    tab[e] = table[e >> 5];
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      double D[16][8] = {};
      for (int64_t kc = 0; kc < K; kc += 32) {
        uint32_t af[32][2][4], bf[32][4];
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane >> 2, t = lane & 3;
          Group ga{0, 0}, gb{0, 0};
          if (n0 + g < N)
            ga = group_from_bytes(packed + ((n0 + g) * K + kc) / 8 * B + t * B, B);
          if (n0 + g + 8 < N)
            gb = group_from_bytes(packed + ((n0 + g + 8) * K + kc) / 8 * B + t * B, B);
          tc_a_frags<B>(ga, gb, tab.data(), lane, af[lane]);
          for (int i = 0; i < 4; ++i) { // the lane's 16-byte x load: physical k 8t .. 8t + 7
            const bool ok = m0 + g < M;
            const float *xr = x + (m0 + g) * ldx + kc + 8 * t + 2 * i;
            bf[lane][i] = ok ? bf16x2_bits(xr[0], xr[1]) : 0u;
          }
        }
        for (int step = 0; step < 2; ++step) {
          float A[16][16], Bm[16][8];
          for (int lane = 0; lane < 32; ++lane) {
            const int g = lane >> 2, t = lane & 3;
            for (int r = 0; r < 4; ++r)
              for (int h = 0; h < 2; ++h)
                A[g + 8 * (r & 1)][2 * t + h + 8 * (r >> 1)] =
                    bf16_bits_to_f32((af[lane][step][r] >> (16 * h)) & 0xffffu);
            for (int r = 0; r < 2; ++r)
              for (int h = 0; h < 2; ++h)
                Bm[2 * t + h + 8 * r][g] =
                    bf16_bits_to_f32((bf[lane][2 * step + r] >> (16 * h)) & 0xffffu);
          }
          for (int i = 0; i < 16; ++i)
            for (int j = 0; j < 8; ++j)
              for (int q = 0; q < 16; ++q)
                D[i][j] += static_cast<double>(A[i][q]) * Bm[q][j];
        }
      }
      for (int lane = 0; lane < 32; ++lane) {
        for (int e = 0; e < 4; ++e) {
          int row, col;
          tc_c_pos(lane, e, &row, &col);
          if (n0 + row < N && m0 + col < M) {
            const int g = lane >> 2, t = lane & 3;
            const double d = D[g + 8 * (e >> 1)][2 * t + (e & 1)]; // the PTX C layout
            y[(m0 + col) * ldy + n0 + row] = static_cast<float>(d) + (bias ? bias[n0 + row] : 0.0f);
          }
        }
      }
    }
  }
}

template <int... Bs>
inline void lut_matmul_dispatch(int mode, int mt, int bits, std::integer_sequence<int, Bs...>,
                                const float *x, int64_t M, int64_t K, int64_t ldx,
                                const uint8_t *packed, int64_t N, const float *table,
                                const float *bias, float *y, int64_t ldy) {
  auto one = [&](auto bc) {
    constexpr int b = decltype(bc)::value;
    if (bits != b)
      return;
    if (mode == 1) {
      if constexpr (b <= 8)
        tc_emulate<b>(x, M, K, ldx, packed, N, table, bias, y, ldy);
      return;
    }
    switch (mt) {
    case 1:
      gemv_fast<b, 1>(x, M, K, ldx, packed, N, table, bias, y, ldy);
      break;
    case 2:
      gemv_fast<b, 2>(x, M, K, ldx, packed, N, table, bias, y, ldy);
      break;
    case 4:
      gemv_fast<b, 4>(x, M, K, ldx, packed, N, table, bias, y, ldy);
      break;
    default:
      gemv_fast<b, 8>(x, M, K, ldx, packed, N, table, bias, y, ldy);
      break;
    }
  };
  (one(std::integral_constant<int, Bs + 1>{}), ...);
}

// mode 0: the float32 fast path (needs K % 32 == 0); mode 1: the tensor-core path (bits <= 8).
inline void lut_matmul(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed,
                       int64_t N, int bits, const float *table, const float *bias, float *y,
                       int64_t ldy, int mode) {
  check(K % 32 == 0 && K > 0 && M > 0 && N > 0,
        "host lut_matmul: K must be a positive multiple of 32");
  check(mode == 0 || bits <= 8, "host lut_matmul: the tensor-core path takes bits <= 8");
  const int mt = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
  lut_matmul_dispatch(mode, mt, bits, std::make_integer_sequence<int, 16>{}, x, M, K, ldx, packed,
                      N, table, bias, y, ldy);
}

} // namespace wsq::cuda::emu
