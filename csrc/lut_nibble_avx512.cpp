// AVX-512 GEMV (one x row) for 1- and 2-bit indices: a table per group of activations, looked up
// for 16 rows of W at once (T-MAC's idea, here with float32 tables so the result stays exact).
//
// Every 4 bits of a row's packed stream (a nibble) hold G = 4 / b consecutive indices, so the
// nibble's contribution to y is one of 16 values that depend only on x: for nibble u,
//   S[u][c] = sum_{j < G} table[(c >> j*b) & (2^b - 1)] * x[u*G + j],   c = 0..15,
// built once per call (K*b/4 tables of 16 floats, used in K blocks that fit L1). Then 16 rows'
// nibbles u sit in the 16 lanes of one zmm after a 16x16 dword transpose of a 64-byte chunk of each
// row, and one vpermps with S[u] as its table looks all 16 up: per 32 (b = 2) or 64 (b = 1) weights
// one shift, one vpermps and one add, against a shift, a vpermps and an fma per 16 weights when
// each row decodes its own weights. The transpose costs 4 shuffles per 16 dwords of W.
//
// Exact in the FLUTE sense: with x = e_j every S entry is table * 1 or table * 0, so y^T is the
// dequantized weight bit for bit; a NaN table entry reaches exactly the rows that use it (NaN * 0
// is NaN in S, as in x @ W^T). Nibbles past K have S = 0 and read zero bytes (masked loads).
#include "lut_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#define WSQ_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

namespace wsq::lut_detail {
namespace {

constexpr int kChunk = 64;  // bytes of one row per step: 16 dwords, 128 nibbles
#ifndef WSQ_NIBBLE_BLOCK
#define WSQ_NIBBLE_BLOCK 4
#endif
// Chunks per K block: 4 x 64 row bytes -> 512 nibble tables, 32 KB (of a 48 KB L1d on Zen 5).
constexpr int64_t kBlockChunks = WSQ_NIBBLE_BLOCK;

// r[i] = 64 bytes of row i (16 dwords) -> o[j] lane i = dword j of row i.
WSQ_T inline void transpose16(const __m512i* r, __m512i* o) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // b[4q + d], 128-bit lane L: dword 4L + d of rows 4q..4q+3
    b[4 * q + 0] = _mm512_unpacklo_epi64(a[4 * q], a[4 * q + 2]);
    b[4 * q + 1] = _mm512_unpackhi_epi64(a[4 * q], a[4 * q + 2]);
    b[4 * q + 2] = _mm512_unpacklo_epi64(a[4 * q + 1], a[4 * q + 3]);
    b[4 * q + 3] = _mm512_unpackhi_epi64(a[4 * q + 1], a[4 * q + 3]);
  }
  for (int d = 0; d < 4; ++d) {  // 4x4 transpose of 128-bit lanes across b[d], b[4+d], ...
    const __m512i c0 = _mm512_shuffle_i32x4(b[d], b[4 + d], 0x44);
    const __m512i c1 = _mm512_shuffle_i32x4(b[d], b[4 + d], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + d], b[12 + d], 0x44);
    const __m512i c3 = _mm512_shuffle_i32x4(b[8 + d], b[12 + d], 0xEE);
    o[d] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    o[4 + d] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    o[8 + d] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    o[12 + d] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

// S[u] for every nibble u < nib (zero past K): 16 floats each.
template <int B>
WSQ_T void build_tables(const float* table, const float* x, int64_t K, int64_t nib, float* S) {
  constexpr int G = 4 / B;
  alignas(64) float tj[G][16];
  for (int j = 0; j < G; ++j)
    for (int c = 0; c < 16; ++c) tj[j][c] = table[(c >> (j * B)) & ((1 << B) - 1)];
  __m512 t[G];
  for (int j = 0; j < G; ++j) t[j] = _mm512_load_ps(tj[j]);
  const int64_t full = K / G;  // K * b % 8 == 0, so K % G == 0
  for (int64_t u = 0; u < full; ++u) {
    const float* xu = x + u * G;
    __m512 s = _mm512_mul_ps(t[0], _mm512_set1_ps(xu[0]));
    for (int j = 1; j < G; ++j) s = _mm512_fmadd_ps(t[j], _mm512_set1_ps(xu[j]), s);
    _mm512_store_ps(S + u * 16, s);
  }
  for (int64_t u = full; u < nib; ++u) _mm512_store_ps(S + u * 16, _mm512_setzero_ps());
}

// Partial sums over chunks [c0, c1) of nr <= 16 rows of `rb` bytes each, from row n0: y = s (+bias)
// on the first block of a row (c0 == 0), y += s after it. S holds the tables of chunk c0 onwards.
// The same chunks of the next 16 rows are prefetched: a block walks short runs of 16 rows, which
// the hardware prefetcher alone picks up late.
WSQ_T void block16(const uint8_t* p, int64_t rb, int64_t n0, int nr, int64_t c0, int64_t c1,
                   const float* S, const float* bias, float* y, bool prefetch_next) {
  const int64_t nchunks = (rb + kChunk - 1) / kChunk;
  const __mmask64 tail = rb % kChunk ? (~uint64_t{0} >> (64 - rb % kChunk)) : ~uint64_t{0};
  __m512 acc[8];
  for (int a = 0; a < 8; ++a) acc[a] = _mm512_setzero_ps();
  alignas(64) __m512i ot[16];
  for (int64_t c = c0; c < c1; ++c) {
    const __mmask64 m = c + 1 == nchunks ? tail : ~uint64_t{0};
    __m512i r[16], o[16];
    for (int i = 0; i < 16; ++i) {
      const uint8_t* src = p + (n0 + i) * rb + c * kChunk;
      if (i < nr) {
        if (prefetch_next) _mm_prefetch(reinterpret_cast<const char*>(src + 16 * rb), _MM_HINT_T0);
        r[i] = _mm512_maskz_loadu_epi8(m, src);
      } else {
        r[i] = _mm512_setzero_si512();
      }
    }
    transpose16(r, o);
    for (int j = 0; j < 16; ++j) _mm512_store_si512(ot + j, o[j]);
    const float* Sc = S + (c - c0) * (2 * kChunk) * 16;
    // Rolled over j, the dwords reloaded from ot: fully unrolled, GCC hoisted the 128 lookups and
    // spilled ~90 zmm a chunk to the stack (2.2 cycles a lookup against ~1.1 for the bare loop).
    #pragma GCC unroll 1
    for (int j = 0; j < 16; ++j) {
      const __m512i oj = _mm512_load_si512(ot + j);
      #pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) {
        const __m512 s = _mm512_load_ps(Sc + (8 * j + q) * 16);
        acc[q] = _mm512_add_ps(acc[q], _mm512_permutexvar_ps(_mm512_srli_epi32(oj, 4 * q), s));
      }
    }
  }
  const __m512 s03 = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  const __m512 s47 = _mm512_add_ps(_mm512_add_ps(acc[4], acc[5]), _mm512_add_ps(acc[6], acc[7]));
  const __m512 s = _mm512_add_ps(s03, s47);
  const __mmask16 k = static_cast<__mmask16>((1u << nr) - 1u);
  __m512 b;
  if (c0 == 0)
    b = bias ? _mm512_maskz_loadu_ps(k, bias + n0) : _mm512_setzero_ps();
  else
    b = _mm512_maskz_loadu_ps(k, y + n0);
  _mm512_mask_storeu_ps(y + n0, k, _mm512_add_ps(s, b));
}

}  // namespace

bool gemv_nibble_avx512(const Packed& w, const float* x, int64_t K, int64_t N, const float* bias,
                        float* y) {
  const int b = w.bits;
  if ((b != 1 && b != 2) || (K * b) % 8 != 0) return false;
  const int64_t rb = K * b / 8, nchunks = (rb + kChunk - 1) / kChunk, nib = nchunks * 2 * kChunk;
  thread_local std::vector<float> S_buf;  // reused: no allocation (or page faults) per call
  const size_t need = static_cast<size_t>(nib * 16 + 16);
  if (S_buf.size() < need) S_buf.resize(need);
  const uintptr_t base = reinterpret_cast<uintptr_t>(S_buf.data());
  float* S = reinterpret_cast<float*>((base + 63) & ~uintptr_t{63});  // 64-byte aligned tables
  if (b == 1)
    build_tables<1>(w.table, x, K, nib, S);
  else
    build_tables<2>(w.table, x, K, nib, S);
  // The tables take 128 bytes per byte of a W row (16 * K * b in all) and each is read once per 16
  // rows. Unblocked, past 64 KB (b = 2 beyond K = 2048) they streamed from L2 at 64 bytes a lookup
  // and the per-row decoder of lut_avx512.cpp won (4096 x 4096, b = 2, 1 thread, AMD Zen 5: 6.0x
  // against 8.3x dense fp32). So K is cut into blocks of kBlockChunks chunks whose tables (32 KB)
  // stay in L1 while every row block passes over them; y carries the running sums between blocks.
  const int64_t nblocks = (N + 15) / 16, nkb = (nchunks + kBlockChunks - 1) / kBlockChunks;
#pragma omp parallel if (N * K >= kParallelWork && nblocks > 1)
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const int64_t c0 = kb * kBlockChunks, c1 = std::min(nchunks, c0 + kBlockChunks);
    const float* Sk = S + c0 * (2 * kChunk) * 16;
#pragma omp for schedule(dynamic, 2)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t n0 = blk * 16;
      const int nr = static_cast<int>(std::min<int64_t>(16, N - n0));
      block16(w.p, rb, n0, nr, c0, c1, Sk, bias, y, blk + 1 < nblocks);
    }
  }
  return true;
}

}  // namespace wsq::lut_detail

#else

namespace wsq::lut_detail {
bool gemv_nibble_avx512(const Packed&, const float*, int64_t, int64_t, const float*, float*) {
  return false;
}
}  // namespace wsq::lut_detail

#endif
