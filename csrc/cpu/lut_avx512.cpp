// AVX-512 LUT kernels (F/BW/VL + VBMI; see lut.h). The table lives in registers wherever it fits:
//   b <= 4   one zmm of 16 floats, looked up with vpermps (_mm512_permutexvar_ps);
//   b 5..8   four byte planes of the table (byte j of every entry), each 1, 2 or 4 zmm, looked up
//            64 indices at a time with vpermb / vpermi2b, then re-interleaved into floats;
//   b = 9    the same byte-plane lookup in both 256-entry halves, chosen by bit 8 (Split9);
//   b > 9    scalar loads from the table in L1/L2 (Lookup).
// Gathers are what the 5..8-bit case would otherwise use; on AMD Zen 4 they run ~6x slower than the
// byte-plane lookup (measured: GEMV 4096x4096 b=8, 3.9 ms vs 0.64 ms on 2 threads).
#include "lut_impl.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12 flags the intrinsics' own _mm*_undefined_* self-initialisation when inlined at -O3
// (GCC bug 105593, fixed in 13): silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <type_traits>

#define WSQ_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

namespace wsq::lut_detail {
namespace {

WSQ_T inline __mmask16 lanes(int64_t r) {
  return r >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << r) - 1u);
}

// b = 1..4: 16 indices per group; the table is replicated to 16 entries (t[j] = table[j mod 2^b])
// so vpermps, which reads the low 4 bits of each lane, ignores the neighbours' bits left above.
template <int B>
struct Small {
  static constexpr int kL = 16;
  __m512 t;
  __m512i sh;
  WSQ_T explicit Small(const Packed& w) {
    alignas(64) float tt[16];
    alignas(64) int32_t s[16];
    for (int j = 0; j < 16; ++j) {
      tt[j] = w.table[j & ((1 << B) - 1)];
      s[j] = j * B;  // b >= 3: the multishift control, byte 0 of lane j (bit offset in its qword)
    }
    t = _mm512_load_ps(tt);
    sh = _mm512_load_si512(s);
  }
  WSQ_T void operator()(const uint8_t* g, __m512* o) const {
    __m512i idx;
    if constexpr (B >= 3) {  // 48 or 64 bits: lane i's byte 0 gets bits Bi..Bi+7 (vpmultishiftqb)
      const __m128i u = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g));
      idx = _mm512_multishift_epi64_epi8(sh, _mm512_broadcastq_epi64(u));  // vpbroadcastq from memory
    } else {  // 16 or 32 bits: one broadcast word, lane i shifted right by i*b
      const __m128i u = _mm_loadu_si32(g);
      idx = _mm512_srlv_epi32(_mm512_broadcastd_epi32(u), sh);
    }
    o[0] = _mm512_permutexvar_ps(idx, t);
  }
};

// Four byte planes (byte j of 64 table values each, in the byte positions of Planes' order) ->
// 64 floats in stream order: bytes -> words -> dwords within 128-bit lanes.
WSQ_T inline void join_planes(__m512i b0, __m512i b1, __m512i b2, __m512i b3, __m512* o) {
  const __m512i l01 = _mm512_unpacklo_epi8(b0, b1), h01 = _mm512_unpackhi_epi8(b0, b1);
  const __m512i l23 = _mm512_unpacklo_epi8(b2, b3), h23 = _mm512_unpackhi_epi8(b2, b3);
  o[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(l01, l23));
  o[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(l01, l23));
  o[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(h01, h23));
  o[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(h01, h23));
}

// b = 5..8: 64 indices (8b bytes) per group. One vpermb copies, for each run of 4 consecutive
// indices, the <= 4 stream bytes holding it into a 4-byte slot of a qword; vpmultishiftqb then
// extracts each index into its own byte. The slots are ordered so that, after the four byte-plane
// lookups, the unpack sequence (bytes -> words -> dwords, within 128-bit lanes) leaves the 64 floats
// in natural order: byte position p = 16L + 4q + d receives index 16q + 4L + d.
// P = table registers per plane: 1 (64 entries; b = 5 replicated), 2 (b = 7), 4 (b = 8).
template <int P>
struct Planes {
  static constexpr int kL = 64;
  __m512i spread, shift;
  __m512i tab[4][P];
  WSQ_T explicit Planes(const Packed& w) {
    const int b = w.bits;
    alignas(64) uint8_t sp[64], sh[64];
    for (int p = 0; p < 64; ++p) {
      const int L = p / 16, q = (p % 16) / 4, d = p % 4, base = 16 * q + 4 * L;
      sp[p] = static_cast<uint8_t>(base * b / 8 + d);  // slot byte d of the run's first stream byte
      sh[p] = static_cast<uint8_t>(32 * (q % 2) + (base * b) % 8 + d * b);
    }
    spread = _mm512_load_si512(sp);
    shift = _mm512_load_si512(sh);
    alignas(64) uint8_t tb[4][256];
    for (int j = 0; j < 64 * P; ++j) {
      uint32_t u;
      std::memcpy(&u, &w.table[j & ((1 << b) - 1)], 4);
      for (int pl = 0; pl < 4; ++pl) tb[pl][j] = static_cast<uint8_t>(u >> (8 * pl));
    }
    for (int pl = 0; pl < 4; ++pl)
      for (int r = 0; r < P; ++r) tab[pl][r] = _mm512_load_si512(tb[pl] + 64 * r);
  }
  static WSQ_T __m512i plane(const __m512i* t, __m512i idx, __mmask64 hi) {
    if constexpr (P == 1) {
      return _mm512_permutexvar_epi8(idx, t[0]);  // low 6 bits
    } else if constexpr (P == 2) {
      return _mm512_permutex2var_epi8(t[0], idx, t[1]);  // low 7 bits
    } else {
      return _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(t[0], idx, t[1]),
                                    _mm512_permutex2var_epi8(t[2], idx, t[3]));
    }
  }
  WSQ_T void operator()(const uint8_t* g, __m512* o) const {
    const __m512i* t = &tab[0][0];
    const __m512i v = _mm512_loadu_si512(g);
    const __m512i spread_v = _mm512_permutexvar_epi8(spread, v);
    // b = 8: every index is a whole byte, so the spread already is the index vector
    const __m512i idx = P == 4 ? spread_v : _mm512_multishift_epi64_epi8(shift, spread_v);
    const __mmask64 hi = P == 4 ? _mm512_movepi8_mask(idx) : 0;
    join_planes(plane(t, idx, hi), plane(t + P, idx, hi), plane(t + 2 * P, idx, hi),
                plane(t + 3 * P, idx, hi), o);
  }
};

// b = 9: 64 indices (72 bytes) per group; index = s * 256 + lo, lo looked up in both 256-entry
// halves of the table as b = 8 does (four byte planes; the 32 table registers mostly read from L1
// as memory operands), the half chosen per byte by bit 8. Each index's two stream bytes are copied
// into a word by one vpermt2b per 32 indices (the word positions in Planes' order, so the same
// unpack leaves stream order), shifted by vpsrlvw and truncated to bytes. Against the scalar Lookup
// (4096x4096 GEMV, 1 thread, AMD Zen 5): 1.87 against 3.06 ms. At b = 10 the four quarter tables
// (64 registers, 15 byte shuffles and blends per plane) ran 3.5 against 3.1 ms, so Lookup stays.
struct Split9 {
  static constexpr int B = 9, kL = 64, S = 2;
  __m512i spread[2], shift[2];
  __m512i tab[S][4][4];  // [sub-table][byte plane][register]
  WSQ_T explicit Split9(const Packed& w) {
    alignas(64) uint8_t sp[2][64];
    alignas(64) uint16_t sh[2][32];
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 32; ++j) {
        const int p = 32 * h + j, L = p / 16, q = (p % 16) / 4, d = p % 4, i = 16 * q + 4 * L + d;
        const int bit = i * B;
        sp[h][2 * j] = static_cast<uint8_t>(bit / 8);  // indices of the 128 bytes of (v0, v1)
        sp[h][2 * j + 1] = static_cast<uint8_t>(bit / 8 + 1);
        sh[h][j] = static_cast<uint16_t>(bit % 8);
      }
    for (int h = 0; h < 2; ++h) {
      spread[h] = _mm512_load_si512(sp[h]);
      shift[h] = _mm512_load_si512(sh[h]);
    }
    alignas(64) uint8_t tb[4][256];
    for (int st = 0; st < S; ++st) {
      for (int j = 0; j < 256; ++j) {
        uint32_t u;
        std::memcpy(&u, &w.table[st * 256 + j], 4);
        for (int pl = 0; pl < 4; ++pl) tb[pl][j] = static_cast<uint8_t>(u >> (8 * pl));
      }
      for (int pl = 0; pl < 4; ++pl)
        for (int r = 0; r < 4; ++r) tab[st][pl][r] = _mm512_load_si512(tb[pl] + 64 * r);
    }
  }
  WSQ_T void operator()(const uint8_t* g, __m512* o) const {
    const __m512i v0 = _mm512_loadu_si512(g);
    const __m512i v1 = _mm512_maskz_loadu_epi8((uint64_t{1} << (8 * B - 64)) - 1, g + 64);
    __m256i lo8[2];
    __mmask32 m8[2];
    for (int h = 0; h < 2; ++h) {
      const __m512i wd = _mm512_srlv_epi16(_mm512_permutex2var_epi8(v0, spread[h], v1), shift[h]);
      lo8[h] = _mm512_cvtepi16_epi8(wd);
      m8[h] = _mm512_test_epi16_mask(wd, _mm512_set1_epi16(0x100));
    }
    const __m512i lo = _mm512_inserti64x4(_mm512_castsi256_si512(lo8[0]), lo8[1], 1);
    const __mmask64 k7 = _mm512_movepi8_mask(lo);
    const __mmask64 k8 = _mm512_kunpackd(m8[1], m8[0]);
    __m512i b[4];
    for (int pl = 0; pl < 4; ++pl) {
      __m512i r[S];
      for (int st = 0; st < S; ++st) {
        const __m512i* t = tab[st][pl];
        r[st] = _mm512_mask_blend_epi8(k7, _mm512_permutex2var_epi8(t[0], lo, t[1]),
                                       _mm512_permutex2var_epi8(t[2], lo, t[3]));
      }
      b[pl] = _mm512_mask_blend_epi8(k8, r[0], r[1]);
    }
    join_planes(b[0], b[1], b[2], b[3], o);
  }
};

// b = 10..16: the table (4 KB .. 256 KB) stays in memory. Each of the 16 indices of a group is
// pulled out with scalar shifts at offsets fixed by B and its value loaded into an xmm lane, four
// xmm then joined into one zmm. On AMD Zen 5 vgatherdps zmm sustained ~0.30 ns a weight (one
// thread, table in L1/L2) against ~0.16 ns for these scalar loads and inserts, which use the
// integer and load ports the gather's micro-ops queue behind (standalone loop, b = 9 and 12;
// b = 16, a 256 KB table, ~0.33 ns either way).
template <int B>
struct Lookup {
  static constexpr int kL = 16;
  const float* table;
  WSQ_T explicit Lookup(const Packed& w) : table(w.table) {}
  static inline uint32_t at(const uint8_t* g, int i) { return group_index<B>(g, i); }
  WSQ_T void operator()(const uint8_t* g, __m512* o) const {
    const float* t = table;
    __m128 q4[4];
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      q4[j] = _mm_setr_ps(t[at(g, 4 * j)], t[at(g, 4 * j + 1)], t[at(g, 4 * j + 2)], t[at(g, 4 * j + 3)]);
    const __m512 lo = _mm512_insertf32x4(_mm512_castps128_ps512(q4[0]), q4[1], 1);
    o[0] = _mm512_insertf32x4(_mm512_insertf32x4(lo, q4[2], 2), q4[3], 3);
  }
};

// Calls f(decoder) with the decoder for w.bits, built once per kernel call.
template <class F>
void visit(const Packed& w, F&& f) {
  switch (w.bits) {
    case 1: { const Small<1> d(w); f(d); break; }
    case 2: { const Small<2> d(w); f(d); break; }
    case 3: { const Small<3> d(w); f(d); break; }
    case 4: { const Small<4> d(w); f(d); break; }
    case 5:
    case 6: { const Planes<1> d(w); f(d); break; }
    case 7: { const Planes<2> d(w); f(d); break; }
    case 8: { const Planes<4> d(w); f(d); break; }
    case 9: { const Split9 d(w); f(d); break; }
    case 10: { const Lookup<10> d(w); f(d); break; }
    case 11: { const Lookup<11> d(w); f(d); break; }
    case 12: { const Lookup<12> d(w); f(d); break; }
    case 13: { const Lookup<13> d(w); f(d); break; }
    case 14: { const Lookup<14> d(w); f(d); break; }
    case 15: { const Lookup<15> d(w); f(d); break; }
    default: { const Lookup<16> d(w); f(d); break; }
  }
}

// out[0, cnt) = table values of elements [e, e + cnt): scalar up to a byte boundary, whole groups,
// one partial group through a masked store, and scalar for the stream's last bytes (safe_start).
template <class D>
WSQ_T void span(const D& d, const Packed& w, int64_t e, int64_t cnt, float* out) {
  constexpr int V = D::kL / 16;
  const int64_t end = e + cnt, safe = safe_start(w);
  for (; e < end && (e & 7); ++e) *out++ = w.table[index_at(w, e)];
  __m512 v[V];
  for (; e + D::kL <= end && e <= safe; e += D::kL, out += D::kL) {
    d(group_at(w, e), v);
    for (int j = 0; j < V; ++j) _mm512_storeu_ps(out + 16 * j, v[j]);
  }
  if (e < end && e <= safe) {
    d(group_at(w, e), v);
    const int64_t rem = end - e;
    for (int j = 0; j < V && 16 * j < rem; ++j) _mm512_mask_storeu_ps(out + 16 * j, lanes(rem - 16 * j), v[j]);
    return;
  }
  for (; e < end; ++e) *out++ = w.table[index_at(w, e)];
}

// fp16 (vcvtps2ph, round to nearest even) or bf16 (the integer rounding of common.h, NaN kept).
WSQ_T void store_half(const float* src, int64_t cnt, void* out, int64_t off, int dt) {
  uint16_t* o = static_cast<uint16_t*>(out) + off;
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
  for (int64_t i = 0; i < cnt; i += 16) {
    const __mmask16 m = lanes(cnt - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, src + i);
    __m256i h;
    if (dt == kF16) {
      h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      const __m512i u = _mm512_castps_si512(v), top = _mm512_srli_epi32(u, 16);
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(top, one))), 16);
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_or_si512(top, quiet));
      h = _mm512_cvtepi32_epi16(r);
    }
    _mm256_mask_storeu_epi16(o + i, m, h);
  }
}

// cnt values from element e into out (dtype dt) at element offset off.
template <class D>
WSQ_T void emit(const D& d, const Packed& w, int64_t e, int64_t cnt, void* out, int64_t off, int dt) {
  if (dt == kF32) {
    span(d, w, e, cnt, static_cast<float*>(out) + off);
    return;
  }
  constexpr int64_t kBuf = 1024;
  alignas(64) float buf[kBuf];
  for (int64_t i = 0; i < cnt;) {
    const int64_t c = std::min(cnt - i, kBuf - ((e + i) & 7));  // later chunks start byte-aligned
    span(d, w, e + i, c, buf);
    store_half(buf, c, out, off + i, dt);
    i += c;
  }
}

// The decode keeps the shuffle pipes busy, so the loop issues its loads slowly and the hardware
// prefetcher alone leaves the stream short: standalone on Zen 4, 2 threads, 11008 x 4096, the
// GEMV read 11-12 GB/s of packed weight with no software prefetch, 15-17 with a 1 KiB-ahead L1
// prefetch per 32 bytes, against ~30 GB/s for a plain read of the same buffer. Prefetching two
// rows (4 KiB) ahead into L2, once per line (so it neither evicts the permuted x from L1 nor holds
// L1 fill buffers), gained a further ~5-10% standalone and 20-30% on cold weights through the
// library (A/B of alternating processes; bench/README.md). The AVX2 GEMV, more compute-bound,
// gained nothing from it. Used by the one-x-row path of rows() at >= 8 bits.
constexpr int kStreamAhead = 4096;

// (The `#pragma GCC unroll` on the short loops makes GCC unroll them before scalar replacement,
// so the accumulator arrays live in registers instead of being stored to the stack every step.)
// Fused rows kernel for small batches: y[m][n] for MB rows of x and W rows [n0, n1), decoding each
// group of weights once into registers and multiplying it by all MB x rows. K is walked in chunks
// (row_chunk) so the MB x-row slices stay in L1 while every W row of the range streams past them;
// y holds the running sums between chunks.
//
// The order of the float32 operations is the same at every width (the per-tensor runtime width
// must never change a result, tests/test_widths.py): a row's elements before its first byte
// boundary are summed in scalar (`head`); from there, consecutive 16-element vectors v = 0, 1, ...
// of the chunk go by fma into accumulator v % A (A fixed by MB alone), the last vector masked;
// then acc[0] + acc[1] + ... is reduced and head added. A width decides only how a vector's weights
// are read: whole groups in registers (the loop of S-element steps), or, for the chunk's last
// < S elements and the stream's last bytes, decoded into a buffer by span().
template <class D, int MB>
WSQ_T void rows(const D& dref, const Packed& w, const float* x, int64_t ldx, int64_t K, int64_t n0,
                int64_t n1, const float* bias, float* y, int64_t ldy) {
  // One x row: 8 accumulators, so the fma chains (4 cycles each, 2 pipes) never bound a decoder.
  constexpr int A = MB == 1 ? 8 : (MB == 2 ? 2 : 1);
  constexpr int L = D::kL, V = L / 16, S = std::max(L, 16 * A), U = S / L, UV = S / 16;
  static_assert(UV % A == 0, "a step must end on accumulator 0");
  const D d = dref;  // a local copy lets the compiler keep the table in registers
  const int64_t kc = row_chunk(MB, K), safe = safe_start(w);
  const int64_t group_bytes = int64_t{L} * w.bits / 8, step_bytes = group_bytes * U;
  // One x row and >= 8 bits: the W stream is consumed at >= 1 byte per weight and the hardware
  // prefetcher falls behind, so prefetch it kStreamAhead ahead, once a line (A/B of alternating
  // processes on Zen 4: b = 8 up to ~30% faster at 1 thread, mostly faster at 2; narrower widths
  // showed no clear gain within the machine's noise, so they skip it).
  const bool stream_prefetch = MB == 1 && w.bits >= 8;
  for (int64_t c = 0; c * kc < K; ++c) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t e0 = n * K, a0 = (e0 + 7) & ~int64_t{7};  // first byte-aligned element
      const int64_t lo = c == 0 ? e0 : a0 + c * kc, end = std::min(e0 + K, a0 + (c + 1) * kc);
      if (lo >= end) continue;
      if (kc < K && n + 1 < n1) prefetch_range(w, lo + K, end + K);
      __m512 acc[MB][A];
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m)
        #pragma GCC unroll 16
        for (int a = 0; a < A; ++a) acc[m][a] = _mm512_setzero_ps();
      float head[MB] = {};
      int64_t e = lo;
      for (; e < end && (e & 7); ++e) {  // row start not on a byte boundary
        const float wv = w.table[index_at(w, e)];
        #pragma GCC unroll 16
        for (int m = 0; m < MB; ++m) head[m] += wv * x[m * ldx + (e - e0)];
      }
      const uint8_t* g = group_at(w, e);
      for (; e + S <= end && e + (U - 1) * L <= safe; e += S, g += step_bytes) {
        if (stream_prefetch)
          for (int64_t o = 0; o < step_bytes; o += 64)
            _mm_prefetch(reinterpret_cast<const char*>(g) + kStreamAhead + o, _MM_HINT_T1);
        __m512 v[UV];
        #pragma GCC unroll 16
        for (int u = 0; u < U; ++u) d(g + u * group_bytes, v + u * V);
        const float* xk = x + (e - e0);
        #pragma GCC unroll 16
        for (int j = 0; j < UV; ++j)
          #pragma GCC unroll 16
          for (int m = 0; m < MB; ++m)
            acc[m][j % A] = _mm512_fmadd_ps(v[j], _mm512_loadu_ps(xk + m * ldx + 16 * j), acc[m][j % A]);
      }
      for (; e < end; e += S) {  // the same vectors from a buffer; masked: no lane past `end` is read
        alignas(64) float buf[S];
        const int64_t rem = std::min<int64_t>(S, end - e);
        span(d, w, e, rem, buf);
        const float* xk = x + (e - e0);
        #pragma GCC unroll 16
        for (int j = 0; j < UV; ++j) {  // constant trip count: acc stays a set of registers
          if (16 * j >= rem) break;
          const __mmask16 k = lanes(rem - 16 * j);
          const __m512 wv = _mm512_maskz_loadu_ps(k, buf + 16 * j);
          #pragma GCC unroll 16
          for (int m = 0; m < MB; ++m)
            acc[m][j % A] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k, xk + m * ldx + 16 * j), acc[m][j % A]);
        }
      }
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        __m512 s = acc[m][0];
        #pragma GCC unroll 16
        for (int a = 1; a < A; ++a) s = _mm512_add_ps(s, acc[m][a]);
        const float part = _mm512_reduce_add_ps(s) + head[m];
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

constexpr int kFusedMB = 8;  // x rows per fused pass

template <class D>
void rows_any(int mb, const D& d, const Packed& w, const float* x, int64_t ldx, int64_t K, int64_t n0,
              int64_t n1, const float* bias, float* y, int64_t ldy) {
  using Fn = void (*)(const D&, const Packed&, const float*, int64_t, int64_t, int64_t, int64_t,
                      const float*, float*, int64_t);
  static constexpr Fn fns[kFusedMB] = {rows<D, 1>, rows<D, 2>, rows<D, 3>, rows<D, 4>,
                                       rows<D, 5>, rows<D, 6>, rows<D, 7>, rows<D, 8>};
  fns[mb - 1](d, w, x, ldx, K, n0, n1, bias, y, ldy);
}

// GEMM micro-kernel: c[r][0 .. 16*MV) (+)= sum_k w[r][k] * xp[k][0 .. 16*MV) for NR W rows; xp is
// an x^T panel of width 32. Each weight is broadcast once and multiplies 16*MV batch rows.
constexpr int64_t kPW = 32, kNR = 6;

template <int NR, int MV>
WSQ_T void micro(const float* w, int64_t ldw, int64_t kc, const float* xp, float* c, int64_t ldc,
                 bool first) {
  __m512 acc[NR][MV];
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 xv[MV];
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) xv[v] = _mm512_loadu_ps(xp + k * kPW + 16 * v);
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const __m512 wb = _mm512_set1_ps(w[r * ldw + k]);
      #pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < NR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) {
      float* p = c + r * ldc + 16 * v;
      _mm512_storeu_ps(p, first ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]));
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
      const int mv = (p == np - 1 && last_valid <= 16) ? 1 : 2;  // skip an all-padding half panel
      fns[nr - 1][mv - 1](wbuf + r0 * kc, kc, kc, xk + p * pstride, yt + r0 * ldc + p * kPW, ldc, first);
    }
  }
}

}  // namespace

void dequant_avx512(const Packed& w, int64_t n, void* out, int dt) {
  visit(w, [&](const auto& d) {
    for_chunks(n, 16384, [&](int64_t e0, int64_t cnt) { emit(d, w, e0, cnt, out, e0, dt); });
  });
}

int64_t gather_avx512(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows_,
                      int64_t n_rows, void* out, int dt) {
  int64_t bad = 0;
  visit(w, [&](const auto& d) {
    bad = gather_driver(num_rows, row_len, rows_, n_rows, out, dt,
                        [&](int64_t e0, int64_t cnt, int64_t off) { emit(d, w, e0, cnt, out, off, dt); });
  });
  return bad;
}

void matmul_avx512(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                   const float* bias, float* y, int64_t ldy) {
  visit(w, [&](const auto& d) {
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
void dequant_avx512(const Packed& w, int64_t n, void* out, int dt) { dequant_scalar(w, n, out, dt); }
int64_t gather_avx512(const Packed& w, int64_t nr, int64_t rl, const int64_t* rows, int64_t n,
                      void* out, int dt) {
  return gather_scalar(w, nr, rl, rows, n, out, dt);
}
void matmul_avx512(const Packed& w, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N,
                   const float* bias, float* y, int64_t ldy) {
  matmul_scalar(w, x, M, K, ldx, N, bias, y, ldy);
}
}  // namespace wsq::lut_detail

#endif
