// Shared, ISA-neutral pieces of the LUT kernels (lut.h): scalar index reads, staging of the
// last groups of a stream, and the threading drivers that lut_avx2.cpp / lut_avx512.cpp instantiate
// with their own target-specific inner functions (passed as callables, so this header holds no
// intrinsics and compiles for baseline x86-64).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>  // common.h uses floorf
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../common.h"
#include "lut.h"

namespace wsq::lut_detail {

// A SIMD decoder may load up to kSlack bytes from the first byte of a group of indices (whole
// 16/32/64-byte loads, bytes past the group ignored); see safe_start.
constexpr int kSlack = 64;
// Below this many element visits a kernel stays on the calling thread (OpenMP start-up costs more).
constexpr int64_t kParallelWork = int64_t{1} << 15;

// K chunk (elements, a multiple of 64 so chunks start on byte boundaries) for the fused rows
// kernels. With several x rows, each decoded weight vector costs mb loads of x, so the mb x-row
// slices of one chunk (~20 KB) are kept in L1 while the W rows stream past them (measured on Zen 4:
// M = 4, 4096 x 4096, 1 thread: 3.7 -> 1.8 ms). One x row is not worth it: it breaks the W rows
// into short streams the hardware prefetcher handles badly (GEMV 4096 x 11008: 3.2 -> 4.6 ms).
inline int64_t row_chunk(int mb, int64_t K) {
  const int64_t whole = (K + 63) & ~int64_t{63};
  if (mb == 1) return whole;
  return std::min(whole, std::max<int64_t>(256, (20480 / (4 * mb)) & ~int64_t{63}));
}

// Prefetch hint for the stream bytes of elements [e0, e1): the fused kernels call it for the next
// row's chunk, whose short run the hardware prefetcher would pick up too late.
inline void prefetch_range(const Packed& w, int64_t e0, int64_t e1) {
  const int64_t b0 = (e0 * w.bits) >> 3, b1 = std::min(w.nbytes, ((e1 * w.bits) >> 3) + 1);
  for (int64_t b = b0; b < b1; b += 64) __builtin_prefetch(w.p + b, 0, 3);
}

// Index of element e, reading one unaligned 64-bit window where it is in bounds.
inline uint32_t index_at(const Packed& w, int64_t e) {
  const int64_t bit = e * w.bits;
  const int64_t byte = bit >> 3;
#if defined(__x86_64__) || defined(__i386__)  // little-endian: the window is the stream's bit order
  if (byte + 8 <= w.nbytes) {
    uint64_t u;
    std::memcpy(&u, w.p + byte, 8);
    return static_cast<uint32_t>(u >> (bit & 7)) & ((1u << w.bits) - 1u);
  }
#endif
  return read_packed(w.p, w.nbytes, e, w.bits);
}

// Index i of a group that starts on a byte boundary at g, for a width B the caller fixes at compile
// time (the SIMD decoders of b = 5..7 and 9..16 load table values lane by lane with it): B + 7 <= 23
// bits from byte bit / 8 fit one 32-bit window, which kSlack keeps inside the stream.
template <int B>
inline uint32_t group_index(const uint8_t* g, int i) {
  constexpr uint32_t kMask = (1u << B) - 1u;
  const int bit = i * B;
  uint32_t u;
  std::memcpy(&u, g + (bit >> 3), 4);
  return (u >> (bit & 7)) & kMask;
}

// Groups of indices start at elements e with e % 8 == 0, so on a byte boundary (8 indices fill
// exactly `bits` bytes). A group starting at e <= safe_start(w) may be read with whole-vector
// loads of up to kSlack bytes without leaving the stream; the indices past that (those in the
// stream's last < kSlack bytes) are read one at a time with index_at. Keeping that rare case
// scalar leaves no library call in the hot loops, so accumulators stay in registers.
inline int64_t safe_start(const Packed& w) {
  return w.nbytes >= kSlack ? (w.nbytes - kSlack) / w.bits * 8 : -1;
}
inline const uint8_t* group_at(const Packed& w, int64_t e) { return w.p + (e >> 3) * w.bits; }

// fn(e0, cnt) over [0, n) in chunks of `chunk` elements (a multiple of 64, so every chunk starts
// on a byte boundary and chunks never share a group), split statically over threads.
template <class F>
void for_chunks(int64_t n, int64_t chunk, F&& fn) {
  const int64_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t c = 0; c < nchunks; ++c) fn(c * chunk, std::min(chunk, n - c * chunk));
}

// fn(n0, n1) over blocks of the N output rows, handed out dynamically: on a shared machine a
// thread the scheduler delays no longer holds up the others at the join (a static split made every
// GEMV wait for its slowest half). Each output row is computed whole by one call whatever the
// split, so results stay bitwise equal from run to run and across thread counts.
template <class F>
void for_row_ranges(int64_t N, int64_t work, F&& fn) {
  if (work < kParallelWork || N < 2) {
    fn(int64_t{0}, N);
    return;
  }
  const int64_t nt = omp_get_max_threads();
  const int64_t block = std::max<int64_t>(8, (N + nt * 16 - 1) / (nt * 16));
  const int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) fn(b * block, std::min(N, (b + 1) * block));
}

// Embedding lookup: emit(e0, cnt, out_offset) writes cnt values of the packed stream from element e0
// into `out` at element offset out_offset. Bad row ids are counted and their rows filled with NaN.
template <class F>
int64_t gather_driver(int64_t num_rows, int64_t row_len, const int64_t* rows, int64_t n_rows,
                      void* out, int dt, F&& emit) {
  int64_t bad = 0;
  const float nan = std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n_rows * row_len >= kParallelWork)
  for (int64_t i = 0; i < n_rows; ++i) {
    const int64_t r = rows[i];
    if (r < 0 || r >= num_rows) {
      ++bad;
      for (int64_t j = 0; j < row_len; ++j) store_float(out, i * row_len + j, nan, dt);
      continue;
    }
    emit(r * row_len, row_len, i * row_len);
  }
  return bad;
}

// Blocked GEMM for batches too large for the fused row kernels. W is decoded tile by tile
// (NB rows x KC cols, ~200 KB) into a per-thread buffer and reused by every x row of an M block:
//   decode(e0, cnt, float* out)          cnt weights of the stream from element e0
//   tile(wbuf, nb, kc, xk, pstride, np, last_valid, yt, ldc, first)
//        yt[r][m] (+)= sum_k wbuf[r][k] * x^T panel values, for nb W rows and np panels of pw x
//        rows (panel p at xk + p*pstride, laid out [k][pw]); `first` starts the sums from zero.
// x is repacked once per M block as x^T panels, so the inner kernel broadcasts one weight and
// multiplies it by pw batch rows at once: W needs no transposition and stays row-major.
template <class Decode, class Tile>
void tiled_driver(const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N, const float* bias,
                  float* y, int64_t ldy, int64_t pw, Decode&& decode, Tile&& tile) {
  constexpr int64_t kNB = 48, kKC = 256, kMB = 256;
  const int64_t KC = std::min(K, kKC);
  // x^T block: at most kMB rows and ~8 MB (long rows get fewer batch rows per block)
  const int64_t mblk = std::max(pw, std::min(kMB, (int64_t{1} << 21) / K) / pw * pw);
  std::vector<float> xt(static_cast<size_t>(((std::min(M, mblk) + pw - 1) / pw) * pw * K));
  const bool par = M * N * K >= kParallelWork;
  for (int64_t m0 = 0; m0 < M; m0 += mblk) {
    const int64_t mb = std::min(mblk, M - m0), np = (mb + pw - 1) / pw, mpad = np * pw;
    // x^T panels: xt[p*K*pw + k*pw + j] = x[m0 + p*pw + j][k], zero past the batch.
    const int64_t kchunk = 512, nkc = (K + kchunk - 1) / kchunk;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t pc = 0; pc < np * nkc; ++pc) {
      const int64_t p = pc / nkc, k0 = (pc % nkc) * kchunk, k1 = std::min(K, k0 + kchunk);
      float* dst = xt.data() + p * K * pw;
      for (int64_t j = 0; j < pw; ++j) {
        const int64_t m = p * pw + j;
        if (m < mb) {
          const float* src = x + (m0 + m) * ldx;
          for (int64_t k = k0; k < k1; ++k) dst[k * pw + j] = src[k];
        } else {
          for (int64_t k = k0; k < k1; ++k) dst[k * pw + j] = 0.0f;
        }
      }
    }
    const int64_t ntiles = (N + kNB - 1) / kNB;
#pragma omp parallel if (par)
    {
      std::vector<float> wbuf(static_cast<size_t>(kNB * KC)), yt(static_cast<size_t>(kNB * mpad));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t n0 = t * kNB, nb = std::min(kNB, N - n0);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
          const int64_t kc = std::min(KC, K - k0);
          for (int64_t r = 0; r < nb; ++r) decode((n0 + r) * K + k0, kc, wbuf.data() + r * kc);
          tile(wbuf.data(), nb, kc, xt.data() + k0 * pw, K * pw, np, mb - (np - 1) * pw, yt.data(),
               mpad, k0 == 0);
        }
        for (int64_t m = 0; m < mb; ++m) {
          float* yr = y + (m0 + m) * ldy + n0;
          for (int64_t r = 0; r < nb; ++r) yr[r] = yt[r * mpad + m] + (bias ? bias[n0 + r] : 0.0f);
        }
      }
    }
  }
}

}  // namespace wsq::lut_detail
