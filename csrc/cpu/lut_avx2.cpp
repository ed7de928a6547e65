// AVX2 + FMA LUT kernels (see lut.h). Decoders turn one group of kL indices (kL*b/8 bytes) into
// kL/8 ymm of table values, in the lane order of the call (natural, or the permuted order of the
// one-row GEMV; see kPerm8):
//   b <= 3   8 indices; the table replicated into one ymm, looked up with vpermps (which reads the
//            low 3 bits, so the neighbours' bits left above are ignored);
//   b = 4    natural order: 8 indices, two vpermps on the 16-entry table's halves and a blend by
//            bit 3 (on Zen 5 ~8% faster than spreading nibbles for vpshufb byte planes); permuted
//            order: 32 indices, vpshufb on four byte planes with no nibble spreading (Nib4P);
//   b = 8    8 indices read with one 64-bit load, values fetched with 8 scalar loads: on Zen 4 the
//            vgatherdps it replaces measured 1.3-1.7x slower, and Intel's GDS (Downfall)
//            microcode fix is documented to slow gathers further;
//   other    the same scalar loads, indices pulled out with shifts fixed per width (Lookup).
// fp16/bf16 outputs are converted by the scalar code of common.h (AVX2 does not imply F16C).
#include "lut_impl.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12 flags the intrinsics' own _mm*_undefined_* self-initialisation when inlined at -O3
// (GCC bug 105593, fixed in 13): silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <type_traits>

#define WSQ_T __attribute__((target("avx2,fma")))

namespace wsq::lut_detail {
namespace {

// Lane masks: all ones in the first r of 8 lanes.
WSQ_T inline __m256i lanes(int64_t r) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(r, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Lane orders. Natural: lane i of a decoded vector holds element i of its 8. Permuted (P, the GEMV
// of one x row with K % 8 == 0, x permuted once per call): lane i holds element kPerm8[i], the
// order in which the 4-bit decoder's nibble split (low nibbles of 4 bytes, then their high ones)
// lands without spreading the nibbles: one vpshufb and three logic ops fewer per 32 weights (the
// AVX2 4-bit GEMV 0.67 against 0.80-0.86 ms natural, 4096x4096, AMD Zen 5, 1 thread). Every width
// decodes in the order of the call, so a result never depends on the width (lut.h).
constexpr int kPerm8[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int lane_elem(bool P, int i) { return P ? kPerm8[i] : i; }

// b = 1..3: lane i = (group word >> e*b), e = lane_elem(P, i); vpermps reads the low 3 bits.
template <int B, bool P>
struct Small {
  static constexpr int kL = 8;
  __m256 t;
  __m256i sh;
  WSQ_T explicit Small(const Packed& w) {
    alignas(32) float a[8];
    alignas(32) int32_t s[8];
    for (int j = 0; j < 8; ++j) {
      a[j] = w.table[j & ((1 << B) - 1)];
      s[j] = lane_elem(P, j) * B;
    }
    t = _mm256_load_ps(a);
    sh = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
  }
  WSQ_T void operator()(const uint8_t* g, __m256* o) const {
    uint32_t u;
    std::memcpy(&u, g, 4);
    o[0] = _mm256_permutevar8x32_ps(t, _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(u)), sh));
  }
};

// b = 4, 8 indices per group: the 16-entry table in two ymm, each looked up with vpermps (low 3
// bits of lane i = (group word >> 4i)), the pair chosen by bit 3 moved to the sign (vblendvps).
struct Tab16 {
  static constexpr int kL = 8;
  __m256 lo, hi;
  __m256i sh;
  WSQ_T explicit Tab16(const Packed& w) {
    lo = _mm256_loadu_ps(w.table);
    hi = _mm256_loadu_ps(w.table + 8);
    sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  }
  WSQ_T void operator()(const uint8_t* g, __m256* o) const {
    uint32_t u;
    std::memcpy(&u, g, 4);
    const __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(u)), sh);
    o[0] = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  }
};

// b = 4 in the permuted order: 32 indices (16 bytes) broadcast to both lanes, lane 0 keeps the low
// nibbles and lane 1 the high ones (one vpsrlvd and a mask), looked up with vpshufb on four byte
// planes of the 16-entry table (byte j of every entry) and re-interleaved into floats: o[q] holds
// elements 8q + kPerm8[i]. vpshufb is a cheap in-lane shuffle on every AVX2 core (T-MAC and
// llama.cpp's IQ4_NL use the same lookup on int8 tables; the four planes keep float32 exact).
struct Nib4P {
  static constexpr int kL = 32;
  __m256i sh, m, tab[4];
  WSQ_T explicit Nib4P(const Packed& w) {
    alignas(32) uint8_t tb[4][32];
    for (int j = 0; j < 32; ++j) {
      uint32_t u;
      std::memcpy(&u, &w.table[j & 15], 4);
      for (int pl = 0; pl < 4; ++pl) tb[pl][j] = static_cast<uint8_t>(u >> (8 * pl));
    }
    for (int pl = 0; pl < 4; ++pl) tab[pl] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tb[pl]));
    sh = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    m = _mm256_set1_epi8(15);
  }
  WSQ_T void operator()(const uint8_t* g, __m256* o) const {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g)));
    const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(v, sh), m);
    const __m256i b0 = _mm256_shuffle_epi8(tab[0], idx), b1 = _mm256_shuffle_epi8(tab[1], idx);
    const __m256i b2 = _mm256_shuffle_epi8(tab[2], idx), b3 = _mm256_shuffle_epi8(tab[3], idx);
    const __m256i l01 = _mm256_unpacklo_epi8(b0, b1), h01 = _mm256_unpackhi_epi8(b0, b1);
    const __m256i l23 = _mm256_unpacklo_epi8(b2, b3), h23 = _mm256_unpackhi_epi8(b2, b3);
    o[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
    o[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
    o[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
    o[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
  }
};

// b = 8: 8 indices from one 64-bit load, 8 scalar table loads joined into a ymm.
template <bool P>
struct Byte8 {
  static constexpr int kL = 8;
  const float* table;
  WSQ_T explicit Byte8(const Packed& w) : table(w.table) {}
  WSQ_T void operator()(const uint8_t* g, __m256* o) const {
    uint64_t q;
    std::memcpy(&q, g, 8);
    const float* t = table;
    auto at = [q](int i) { return static_cast<uint32_t>(q >> (8 * lane_elem(P, i))) & 255u; };
    const __m128 a = _mm_setr_ps(t[at(0)], t[at(1)], t[at(2)], t[at(3)]);
    const __m128 b = _mm_setr_ps(t[at(4)], t[at(5)], t[at(6)], t[at(7)]);
    o[0] = _mm256_set_m128(b, a);
  }
};

// b = 5..7, 9..16: each of the 8 indices of a group pulled out with scalar shifts at offsets fixed
// by B, its value loaded into an xmm lane (as Byte8 and the AVX-512 Lookup). vgatherdps, used here
// before, ran these widths at 0.42-0.53x dense fp32 (4096x4096 GEMV, 1 thread, AMD Zen 5).
template <int B, bool P>
struct Lookup {
  static constexpr int kL = 8;
  const float* table;
  WSQ_T explicit Lookup(const Packed& w) : table(w.table) {}
  static inline uint32_t at(const uint8_t* g, int i) { return group_index<B>(g, lane_elem(P, i)); }
  WSQ_T void operator()(const uint8_t* g, __m256* o) const {
    const float* t = table;
    const __m128 a = _mm_setr_ps(t[at(g, 0)], t[at(g, 1)], t[at(g, 2)], t[at(g, 3)]);
    const __m128 b = _mm_setr_ps(t[at(g, 4)], t[at(g, 5)], t[at(g, 6)], t[at(g, 7)]);
    o[0] = _mm256_set_m128(b, a);
  }
};

// Calls f(decoder) with the decoder for w.bits in lane order P, built once per kernel call.
template <bool P, class F>
void visit(const Packed& w, F&& f) {
  switch (w.bits) {
    case 1: { const Small<1, P> d(w); f(d); break; }
    case 2: { const Small<2, P> d(w); f(d); break; }
    case 3: { const Small<3, P> d(w); f(d); break; }
    case 4: {
      if constexpr (P) { const Nib4P d(w); f(d); } else { const Tab16 d(w); f(d); }
      break;
    }
    case 5: { const Lookup<5, P> d(w); f(d); break; }
    case 6: { const Lookup<6, P> d(w); f(d); break; }
    case 7: { const Lookup<7, P> d(w); f(d); break; }
    case 8: { const Byte8<P> d(w); f(d); break; }
    case 9: { const Lookup<9, P> d(w); f(d); break; }
    case 10: { const Lookup<10, P> d(w); f(d); break; }
    case 11: { const Lookup<11, P> d(w); f(d); break; }
    case 12: { const Lookup<12, P> d(w); f(d); break; }
    case 13: { const Lookup<13, P> d(w); f(d); break; }
    case 14: { const Lookup<14, P> d(w); f(d); break; }
    case 15: { const Lookup<15, P> d(w); f(d); break; }
    default: { const Lookup<16, P> d(w); f(d); break; }
  }
}

// out[0, cnt) = table values of elements [e, e + cnt) (see lut_avx512.cpp).
template <class D>
WSQ_T void span(const D& d, const Packed& w, int64_t e, int64_t cnt, float* out) {
  constexpr int V = D::kL / 8;
  const int64_t end = e + cnt, safe = safe_start(w);
  for (; e < end && (e & 7); ++e) *out++ = w.table[index_at(w, e)];
  __m256 v[V];
  for (; e + D::kL <= end && e <= safe; e += D::kL, out += D::kL) {
    d(group_at(w, e), v);
    for (int j = 0; j < V; ++j) _mm256_storeu_ps(out + 8 * j, v[j]);
  }
  if (e < end && e <= safe) {
    d(group_at(w, e), v);
    const int64_t rem = end - e;
    for (int j = 0; j < V && 8 * j < rem; ++j) _mm256_maskstore_ps(out + 8 * j, lanes(rem - 8 * j), v[j]);
    return;
  }
  for (; e < end; ++e) *out++ = w.table[index_at(w, e)];
}

template <class D>
WSQ_T void emit(const D& d, const Packed& w, int64_t e, int64_t cnt, void* out, int64_t off, int dt) {
  if (dt == kF32) {
    span(d, w, e, cnt, static_cast<float*>(out) + off);
    return;
  }
  constexpr int64_t kBuf = 1024;
  alignas(32) float buf[kBuf];
  for (int64_t i = 0; i < cnt;) {
    const int64_t c = std::min(cnt - i, kBuf - ((e + i) & 7));
    span(d, w, e + i, c, buf);
    for (int64_t j = 0; j < c; ++j) store_float(out, off + i + j, buf[j], dt);
    i += c;
  }
}

// Fused rows kernel (see lut_avx512.cpp, whose order of operations this follows with 8-lane
// vectors: the same at every width): 32 weights per step (U groups of kL), K in chunks. P: the
// decoders emit the permuted lane order and x is the permuted copy (one x row, K % 8 == 0).
template <class D, int MB, bool P = false>
WSQ_T void rows(const D& dref, const Packed& w, const float* x, int64_t ldx, int64_t K, int64_t n0,
                int64_t n1, const float* bias, float* y, int64_t ldy) {
  constexpr int A = MB == 1 ? 4 : (MB == 2 ? 2 : 1);
  constexpr int L = D::kL, V = L / 8, S = 32, U = S / L, UV = S / 8;
  static_assert(L <= S && UV % A == 0, "a step must end on accumulator 0");
  const D d = dref;
  const int64_t kc = row_chunk(MB, K), safe = safe_start(w);
  const int64_t group_bytes = int64_t{L} * w.bits / 8, step_bytes = group_bytes * U;
  for (int64_t c = 0; c * kc < K; ++c) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t e0 = n * K, a0 = (e0 + 7) & ~int64_t{7};
      const int64_t lo = c == 0 ? e0 : a0 + c * kc, end = std::min(e0 + K, a0 + (c + 1) * kc);
      if (lo >= end) continue;
      if (kc < K && n + 1 < n1) prefetch_range(w, lo + K, end + K);
      __m256 acc[MB][A];
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m)
        #pragma GCC unroll 16
        for (int a = 0; a < A; ++a) acc[m][a] = _mm256_setzero_ps();
      float head[MB] = {};
      int64_t e = lo;
      for (; e < end && (e & 7); ++e) {
        const float wv = w.table[index_at(w, e)];
        #pragma GCC unroll 16
        for (int m = 0; m < MB; ++m) head[m] += wv * x[m * ldx + (e - e0)];
      }
      const uint8_t* g = group_at(w, e);
      for (; e + S <= end && e + (U - 1) * L <= safe; e += S, g += step_bytes) {
        __m256 v[UV];
        #pragma GCC unroll 16
        for (int u = 0; u < U; ++u) d(g + u * group_bytes, v + u * V);
        const float* xk = x + (e - e0);
        #pragma GCC unroll 16
        for (int j = 0; j < UV; ++j)
          #pragma GCC unroll 16
          for (int m = 0; m < MB; ++m)
            acc[m][j % A] = _mm256_fmadd_ps(v[j], _mm256_loadu_ps(xk + m * ldx + 8 * j), acc[m][j % A]);
      }
      for (; e < end; e += S) {  // the same vectors from a buffer; masked: no lane past `end` is read
        alignas(32) float buf[S];
        const int64_t rem = std::min<int64_t>(S, end - e);
        if constexpr (P) {  // natural order here (span's scalar edges are), permuted below
          for (int64_t i = 0; i < rem; ++i) buf[i] = w.table[index_at(w, e + i)];
        } else {
          span(d, w, e, rem, buf);
        }
        const float* xk = x + (e - e0);
        #pragma GCC unroll 16
        for (int j = 0; j < UV; ++j) {
          if (8 * j >= rem) break;
          __m256i k = lanes(rem - 8 * j);
          __m256 wv = _mm256_maskload_ps(buf + 8 * j, k);
          if constexpr (P) {  // lane i: element kPerm8[i], valid where that element is
            const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            wv = _mm256_permutevar8x32_ps(wv, perm);
            k = _mm256_permutevar8x32_epi32(k, perm);
          }
          #pragma GCC unroll 16
          for (int m = 0; m < MB; ++m)
            acc[m][j % A] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(xk + m * ldx + 8 * j, k), acc[m][j % A]);
        }
      }
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        __m256 s = acc[m][0];
        #pragma GCC unroll 16
        for (int a = 1; a < A; ++a) s = _mm256_add_ps(s, acc[m][a]);
        const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
        const float part = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q))) + head[m];
        float& out = y[m * ldy + n];
        out = c == 0 ? part : out + part;
      }
    }
  }
  if (bias) {
    for (int m = 0; m < MB; ++m)
      for (int64_t n = n0; n < n1; ++n) y[m * ldy + n] += bias[n];
  }
}

constexpr int kFusedMB = 8;

template <class D>
void rows_any(int mb, const D& d, const Packed& w, const float* x, int64_t ldx, int64_t K, int64_t n0,
              int64_t n1, const float* bias, float* y, int64_t ldy) {
  using Fn = void (*)(const D&, const Packed&, const float*, int64_t, int64_t, int64_t, int64_t,
                      const float*, float*, int64_t);
  static constexpr Fn fns[kFusedMB] = {rows<D, 1>, rows<D, 2>, rows<D, 3>, rows<D, 4>,
                                       rows<D, 5>, rows<D, 6>, rows<D, 7>, rows<D, 8>};
  fns[mb - 1](d, w, x, ldx, K, n0, n1, bias, y, ldy);
}

// GEMM micro-kernel on x^T panels of width 16 (two ymm); see lut_avx512.cpp.
constexpr int64_t kPW = 16, kNR = 6;

template <int NR, int MV>
WSQ_T void micro(const float* w, int64_t ldw, int64_t kc, const float* xp, float* c, int64_t ldc,
                 bool first) {
  __m256 acc[NR][MV];
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 xv[MV];
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) xv[v] = _mm256_loadu_ps(xp + k * kPW + 8 * v);
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m256 wb = _mm256_broadcast_ss(w + r * ldw + k);
      #pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm256_fmadd_ps(wb, xv[v], acc[r][v]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) {
      float* p = c + r * ldc + 8 * v;
      _mm256_storeu_ps(p, first ? acc[r][v] : _mm256_add_ps(_mm256_loadu_ps(p), acc[r][v]));
    }
}

void tile(const float* wbuf, int64_t nb, int64_t kc, const float* xk, int64_t pstride, int64_t np,
          int64_t last_valid, float* yt, int64_t ldc, bool first) {
  using Fn = void (*)(const float*, int64_t, int64_t, const float*, float*, int64_t, bool);
  static constexpr Fn fns[kNR][2] = {{micro<1, 1>, micro<1, 2>}, {micro<2, 1>, micro<2, 2>},
                                     {micro<3, 1>, micro<3, 2>}, {micro<4, 1>, micro<4, 2>},
                                     {micro<5, 1>, micro<5, 2>}, {micro<6, 1>, micro<6, 2>}};
  for (int64_t r0 = 0; r0 < nb; r0 += kNR) {
    const int64_t nr = std::min(kNR, nb - r0);
    for (int64_t p = 0; p < np; ++p) {
      const int mv = (p == np - 1 && last_valid <= 8) ? 1 : 2;
      fns[nr - 1][mv - 1](wbuf + r0 * kc, kc, kc, xk + p * pstride, yt + r0 * ldc + p * kPW, ldc, first);
    }
  }
}

}  // namespace

void dequant_avx2(const Packed& w, int64_t n, void* out, int dt) {
  visit<false>(w, [&](const auto& d) {
    for_chunks(n, 16384, [&](int64_t e0, int64_t cnt) { emit(d, w, e0, cnt, out, e0, dt); });
  });
}

int64_t gather_avx2(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows_,
                    int64_t n_rows, void* out, int dt) {
  int64_t bad = 0;
  visit<false>(w, [&](const auto& d) {
    bad = gather_driver(num_rows, row_len, rows_, n_rows, out, dt,
                        [&](int64_t e0, int64_t cnt, int64_t off) { emit(d, w, e0, cnt, out, off, dt); });
  });
  return bad;
}

void matmul_avx2(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                 const float* bias, float* y, int64_t ldy) {
  if (M == 1 && K % 8 == 0) {  // every row starts on an 8-element block: x permuted once
    // 64-byte aligned, as torch allocates x: from malloc's 16-byte alignment a quarter of the
    // ymm loads of x crossed a cache line (b = 1, 4096x4096, Zen 5: 0.61 against 0.49 ms)
    std::vector<float> buf(static_cast<size_t>(K + 16));
    float* xp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
    for (int64_t k = 0; k < K; ++k) xp[k] = x[(k & ~int64_t{7}) + kPerm8[k & 7]];
    visit<true>(w, [&](const auto& d) {
      using D = std::decay_t<decltype(d)>;
      for_row_ranges(N, N * K, [&](int64_t n0, int64_t n1) {
        rows<D, 1, true>(d, w, xp, K, K, n0, n1, bias, y, ldy);
      });
    });
    return;
  }
  visit<false>(w, [&](const auto& d) {
    if (M <= kFusedMB) {
      for_row_ranges(N, M * N * K, [&](int64_t n0, int64_t n1) {
        rows_any(static_cast<int>(M), d, w, x, ldx, K, n0, n1, bias, y, ldy);
      });
      return;
    }
    tiled_driver(
        x, M, K, ldx, N, bias, y, ldy, kPW,
        [&](int64_t e, int64_t cnt, float* out) { span(d, w, e, cnt, out); },
        [](const float* wb, int64_t nb, int64_t kc, const float* xk, int64_t ps, int64_t np,
           int64_t lv, float* yt, int64_t ldc, bool first) { tile(wb, nb, kc, xk, ps, np, lv, yt, ldc, first); });
  });
}

}  // namespace wsq::lut_detail

#else  // not x86: lut_isa() never picks this level

namespace wsq::lut_detail {
void dequant_avx2(const Packed& w, int64_t n, void* out, int dt) { dequant_scalar(w, n, out, dt); }
int64_t gather_avx2(const Packed& w, int64_t nr, int64_t rl, const int64_t* rows, int64_t n,
                    void* out, int dt) {
  return gather_scalar(w, nr, rl, rows, n, out, dt);
}
void matmul_avx2(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                 const float* bias, float* y, int64_t ldy) {
  matmul_scalar(w, x, M, K, ldx, N, bias, y, ldy);
}
}  // namespace wsq::lut_detail

#endif
