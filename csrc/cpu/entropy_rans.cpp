// Interleaved rANS with a 64-bit state and 32-bit renormalisation (the layout of ryg's rans64 and
// of constriction): state in [L, L << 32) with L = 2^31, frequencies summing to M = 2^sb with
// sb in 12..16. Compared with a 32-bit state and byte-wise renormalisation this needs at most one
// renormalisation per symbol (done branch-free) and loses at most log2(1 + M/L) <= 4.4e-5 bits per
// symbol to rounding, which makes the size bound below tight.
//
// Size bound (measure()): with x the encoder state, Phi = log2(x) + 32 * words starts at 31. A
// renormalisation never raises Phi; coding s moves x to floor(x/f)*M + x%f + start < (x/f + 1)*M
// with x >= 2^(31-sb) * f, so Phi grows by < log2(M/f) + log2(1 + 2^(sb-31)). The final state is
// >= L, hence each lane writes 32 * words < I_lane + n_lane * eps bits of words, where I_lane is
// the ideal cost of its symbols; summed over lanes: words <= floor((I + n * eps) / 32), plus
// 64 bits of final state per lane. I depends on the histogram only, not on how lanes split it.
#include <algorithm>
#include <cmath>
#include <queue>

#include "entropy_impl.h"

namespace wsq {
namespace entropy {
namespace detail {
namespace {

// Encoder constants of one symbol: division by the frequency as a multiply by its 64-bit
// reciprocal (ryg's rans64 construction, exact for states < 2^63), then
// x' = x + bias + q * (M - f) == (x / f) * M + x % f + start.
struct EncSym {
  uint64_t rcp = 0, xmax = 0;
  uint32_t bias = 0, cmpl = 0, shift = 0;
};

EncSym enc_sym(uint32_t start, uint32_t f, int sb) {
  EncSym e;
  e.xmax = ((kAnsL >> sb) << 32) * f;
  e.cmpl = (uint32_t(1) << sb) - f;
  if (f < 2) { // q = mulhi(x, 2^64 - 1) = x - 1; the bias adds the missing M - 1
    e.rcp = ~uint64_t(0);
    e.shift = 0;
    e.bias = start + (uint32_t(1) << sb) - 1;
  } else {
    uint32_t shift = 0;
    while (f > (uint32_t(1) << shift))
      shift++;
    uint64_t x0 = f - 1, x1 = uint64_t(1) << (shift + 31);
    const uint64_t t1 = x1 / f;
    x0 += (x1 % f) << 32;
    const uint64_t t0 = x0 / f;
    e.rcp = t0 + (t1 << 32);
    e.shift = shift - 1;
    e.bias = start;
  }
  return e;
}

inline uint64_t mulhi64(uint64_t a, uint64_t b) { return uint64_t((unsigned __int128)a * b >> 64); }

template <class T>
void encode_lanes(const T *sym, int64_t n, const EncSym *es, int K, std::vector<uint8_t> *out,
                  std::vector<uint64_t> *off) {
  off->assign(K, 0);
  out->clear();
  std::vector<uint32_t> words;
  for (int j = 0; j < K; ++j) {
    (*off)[j] = out->size() / 4;
    const int64_t b = lane_begin(n, K, j), e = lane_begin(n, K, j + 1);
    words.clear();
    uint64_t x = kAnsL;
    // Encode backwards so that the decoder reads forwards.
    for (int64_t i = e - 1; i >= b; --i) {
      const EncSym &c = es[sym[i]];
      if (x >= c.xmax) {
        words.push_back(uint32_t(x));
        x >>= 32;
      }
      x += c.bias + (mulhi64(x, c.rcp) >> c.shift) * c.cmpl;
    }
    const size_t at = out->size();
    out->resize(at + 8 + 4 * words.size());
    uint8_t *p = out->data() + at;
    store64(p, x);
    p += 8;
    for (size_t k = words.size(); k-- > 0; p += 4)
      store32(p, words[k]);
  }
}

template <class T> struct AnsLane {
  uint64_t x = 0;
  int64_t ptr = 0, end = 0, left = 0;
  T *out = nullptr;
};

// Decodes G lanes in lockstep (their lengths differ by at most one symbol), then the tails.
// Lane state lives in local arrays whose address never escapes: stores through a uint8_t* may
// alias anything else, and would otherwise force a reload of every lane's state after each
// output byte. A lane that runs out of words reads zeros and keeps counting, so a corrupt stream
// never reads out of bounds and is caught by the final ptr == end check. The state stays in
// [2^(31-sb), 2^63) whatever the input, so no step can overflow.
template <class T, int G>
void decode_group(AnsLane<T> *lanes, const uint8_t *words, const T *slot2sym, const uint32_t *info,
                  int sb) {
  static const uint8_t kZero[4] = {0, 0, 0, 0};
  const uint64_t mask = (uint64_t(1) << sb) - 1;
  uint64_t x[G];
  int64_t ptr[G], end[G], left[G];
  T *out[G];
  int64_t steps = INT64_MAX;
  for (int j = 0; j < G; ++j) {
    x[j] = lanes[j].x;
    ptr[j] = lanes[j].ptr;
    end[j] = lanes[j].end;
    left[j] = lanes[j].left;
    out[j] = lanes[j].out;
    steps = std::min(steps, left[j]);
  }
  auto step = [&](int j, int64_t i) {
    const uint32_t slot = uint32_t(x[j] & mask);
    const T s = slot2sym[slot];
    const uint32_t e = info[s];
    uint64_t y = uint64_t(e >> 16) * (x[j] >> sb) + slot - (e & 0xffff);
    out[j][i] = s;
    const uint8_t *src = ptr[j] < end[j] ? words + 4 * ptr[j] : kZero;
    const uint64_t w = load32(src);
    const bool r = y < kAnsL;
    x[j] = r ? (y << 32) | w : y;
    ptr[j] += r;
  };
  for (int64_t i = 0; i < steps; ++i)
    for (int j = 0; j < G; ++j)
      step(j, i);
  for (int j = 0; j < G; ++j)
    for (int64_t i = steps; i < left[j]; ++i)
      step(j, i);
  for (int j = 0; j < G; ++j) {
    lanes[j].x = x[j];
    lanes[j].ptr = ptr[j];
  }
}

template <class T>
std::string decode_lanes(const uint32_t *freq, int n_symbols, int sb, const uint8_t *payload,
                         int64_t nbytes, const std::vector<uint64_t> &off, T *out, int64_t n,
                         int threads) {
  if (nbytes % 4)
    return "ANS payload is not a whole number of 32-bit words";
  const int K = int(off.size());
  const int64_t total = nbytes / 4;
  std::vector<AnsLane<T>> lanes(K);
  for (int j = 0; j < K; ++j) {
    AnsLane<T> &l = lanes[j];
    l.ptr = int64_t(off[j]);
    l.end = j + 1 < K ? int64_t(off[j + 1]) : total;
    if (l.end - l.ptr < 2)
      return "ANS lane " + std::to_string(j) + " has no room for its state";
    l.x = load64(payload + 4 * l.ptr);
    l.ptr += 2;
    if (l.x < kAnsL || (l.x >> 63))
      return "ANS lane " + std::to_string(j) + " initial state out of range";
    const int64_t b = lane_begin(n, K, j);
    l.out = out + b;
    l.left = lane_begin(n, K, j + 1) - b;
  }
  // Decoding tables: slot -> symbol (M entries of the output type), symbol -> freq << 16 | start.
  const uint32_t M = uint32_t(1) << sb;
  std::vector<T> slot2sym(M);
  std::vector<uint32_t> info(n_symbols, 0);
  uint32_t c = 0;
  for (int s = 0; s < n_symbols; ++s) {
    if (!freq[s])
      continue;
    info[s] = (freq[s] << 16) | c;
    std::fill(slot2sym.begin() + c, slot2sym.begin() + c + freq[s], T(s));
    c += freq[s];
  }
  constexpr int G = 8;
  const int groups = (K + G - 1) / G;
  const int nt = resolve_threads(threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (groups > 1 && nt > 1)
  for (int g = 0; g < groups; ++g) {
    if (g * G + G <= K) {
      decode_group<T, G>(&lanes[g * G], payload, slot2sym.data(), info.data(), sb);
    } else {
      for (int j = g * G; j < K; ++j)
        decode_group<T, 1>(&lanes[j], payload, slot2sym.data(), info.data(), sb);
    }
  }
  for (int j = 0; j < K; ++j) {
    if (lanes[j].ptr > lanes[j].end)
      return "ANS payload too short for the declared count";
    if (lanes[j].ptr < lanes[j].end)
      return "ANS lane " + std::to_string(j) + " has " +
             std::to_string(lanes[j].end - lanes[j].ptr) + " unused words";
    if (lanes[j].x != kAnsL)
      return "ANS lane " + std::to_string(j) + " final state is not the initial state";
  }
  return "";
}

} // namespace

void ans_quantize(const int64_t *counts, int n_symbols, int sb, uint32_t *freq) {
  const uint64_t M = uint64_t(1) << sb;
  uint64_t N = 0, u = 0;
  for (int s = 0; s < n_symbols; ++s) {
    N += uint64_t(counts[s]);
    u += counts[s] > 0;
  }
  std::fill(freq, freq + n_symbols, 0);
  if (u == 0)
    return;
  // The optimum of this separable convex problem lies within 1 of the continuous optimum
  // max(1, c/mu) >= c (M - u) / N (proximity, Hochbaum 1994), so the floors below are a lower
  // bound of it and greedy increments by the largest gain in coded size reach it exactly.
  uint64_t sum = 0;
  for (int s = 0; s < n_symbols; ++s) {
    if (!counts[s])
      continue;
    unsigned __int128 q = (unsigned __int128)uint64_t(counts[s]) * (M - u) / N;
    freq[s] = std::max<uint32_t>(1, uint32_t(q));
    sum += freq[s];
  }
  auto gain = [&](int s) { return double(counts[s]) * std::log1p(1.0 / double(freq[s])); };
  std::priority_queue<std::pair<double, int>> heap;
  for (int s = 0; s < n_symbols; ++s)
    if (counts[s])
      heap.push({gain(s), -s}); // -s: lower symbols first on ties (deterministic)
  for (; sum < M; ++sum) {
    const int s = -heap.top().second;
    heap.pop();
    freq[s]++;
    heap.push({gain(s), -s});
  }
}

uint64_t ans_payload_bound_bits(const int64_t *counts, int n_symbols, const uint32_t *freq, int sb,
                                int lanes) {
  double info = 0;
  int64_t n = 0;
  for (int s = 0; s < n_symbols; ++s) {
    if (!counts[s])
      continue;
    info += double(counts[s]) * (sb - std::log2(double(freq[s])));
    n += counts[s];
  }
  const double eps = std::log2(1.0 + std::ldexp(1.0, sb - 31));
  // 1e-9 relative + 1 bit covers the rounding of the double sums.
  const double bound = (info + double(n) * eps) * (1 + 1e-9) + 1;
  return 32 * uint64_t(std::floor(bound / 32)) + 64 * uint64_t(lanes);
}

void ans_encode(const void *symbols, int elem_size, int64_t n, const uint32_t *freq, int n_symbols,
                int sb, int lanes, std::vector<uint8_t> *out, std::vector<uint64_t> *lane_off) {
  std::vector<EncSym> es(n_symbols);
  uint32_t c = 0;
  for (int s = 0; s < n_symbols; ++s) {
    if (freq[s])
      es[s] = enc_sym(c, freq[s], sb);
    c += freq[s];
  }
  if (elem_size == 1)
    encode_lanes(static_cast<const uint8_t *>(symbols), n, es.data(), lanes, out, lane_off);
  else
    encode_lanes(static_cast<const uint16_t *>(symbols), n, es.data(), lanes, out, lane_off);
}

std::string ans_decode(const uint32_t *freq, int n_symbols, int sb, const uint8_t *payload,
                       int64_t payload_bytes, const std::vector<uint64_t> &lane_off, void *out,
                       int elem_size, int64_t n, int threads) {
  uint64_t sum = 0;
  for (int s = 0; s < n_symbols; ++s)
    sum += freq[s];
  if (sum != (uint64_t(1) << sb))
    return "ANS frequencies do not sum to the scale";
  if (elem_size == 1)
    return decode_lanes(freq, n_symbols, sb, payload, payload_bytes, lane_off,
                        static_cast<uint8_t *>(out), n, threads);
  return decode_lanes(freq, n_symbols, sb, payload, payload_bytes, lane_off,
                      static_cast<uint16_t *>(out), n, threads);
}

} // namespace detail
} // namespace entropy
} // namespace wsq
