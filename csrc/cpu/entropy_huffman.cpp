// Canonical, length-limited Huffman: optimal lengths <= 16 by package-merge, canonical codes read
// LSB first (bit-reversed, as in deflate), table-driven decoding (11-bit primary table plus
// subtables for longer codes) over K lanes, four decoded in lockstep for instruction-level
// parallelism and groups of lanes in parallel threads.
#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "entropy_impl.h"

namespace wsq {
namespace entropy {
namespace detail {
namespace {

constexpr int kPrimaryBits = 11; // 8 KiB primary table: stays in L1 next to the output stream
constexpr int kMaxPrimaryBits = 14;
constexpr uint32_t kSubFlag = 0x80;

uint32_t reverse_bits(uint32_t v, int n) {
  uint32_t r = 0;
  for (int i = 0; i < n; ++i, v >>= 1)
    r = (r << 1) | (v & 1);
  return r;
}

// Canonical codes (deflate's assignment: by length, then symbol), stored bit-reversed.
void canonical_codes(const uint8_t *len, int n_symbols, uint32_t *code) {
  uint32_t count[kHuffMaxLen + 1] = {0}, next[kHuffMaxLen + 2] = {0};
  for (int s = 0; s < n_symbols; ++s)
    count[len[s]]++;
  count[0] = 0;
  for (int l = 1; l <= kHuffMaxLen; ++l)
    next[l + 1] = (next[l] + count[l]) << 1;
  for (int s = 0; s < n_symbols; ++s)
    code[s] = len[s] ? reverse_bits(next[len[s]]++, len[s]) : 0;
}

// Decoding table: entry = sym << 8 | len for a code, or offset << 8 | kSubFlag | subbits.
struct DecodeTable {
  int primary_bits = 0;
  std::vector<uint32_t> t;
};

void build_table(const uint8_t *len, int n_symbols, DecodeTable *dt) {
  // Primary table bits: 11 (8 KiB, L1) unless codes longer than that carry more than 2% of the
  // probability (large alphabets), where a wider table (up to 64 KiB, L2) beats the mispredicted
  // branch to a subtable.
  uint64_t mass[kHuffMaxLen + 1] = {0}; // in units of 2^-16
  int maxlen = 0;
  for (int s = 0; s < n_symbols; ++s) {
    maxlen = std::max(maxlen, int(len[s]));
    if (len[s])
      mass[len[s]] += uint64_t(1) << (kHuffMaxLen - len[s]);
  }
  int T = kPrimaryBits;
  for (;;) {
    uint64_t longer = 0;
    for (int l = T + 1; l <= kHuffMaxLen; ++l)
      longer += mass[l];
    if (T >= kMaxPrimaryBits || longer * 50 <= (uint64_t(1) << kHuffMaxLen))
      break;
    ++T;
  }
  T = std::min(T, maxlen);
  std::vector<uint32_t> code(n_symbols);
  canonical_codes(len, n_symbols, code.data());
  std::vector<uint8_t> subbits(size_t(1) << T, 0);
  for (int s = 0; s < n_symbols; ++s) {
    if (len[s] > T) {
      uint32_t p = code[s] & ((1u << T) - 1);
      subbits[p] = std::max<uint8_t>(subbits[p], uint8_t(len[s] - T));
    }
  }
  size_t size = size_t(1) << T;
  std::vector<uint32_t> base(size_t(1) << T, 0);
  for (size_t p = 0; p < subbits.size(); ++p) {
    if (subbits[p]) {
      base[p] = uint32_t(size);
      size += size_t(1) << subbits[p];
    }
  }
  dt->primary_bits = T;
  dt->t.assign(size, 0);
  for (size_t p = 0; p < subbits.size(); ++p)
    if (subbits[p])
      dt->t[p] = (base[p] << 8) | kSubFlag | subbits[p];
  for (int s = 0; s < n_symbols; ++s) {
    int l = len[s];
    if (!l)
      continue;
    uint32_t e = (uint32_t(s) << 8) | uint32_t(l);
    if (l <= T) {
      for (uint32_t r = code[s]; r < (1u << T); r += 1u << l)
        dt->t[r] = e;
    } else {
      uint32_t p = code[s] & ((1u << T) - 1);
      uint32_t sb = subbits[p];
      for (uint32_t r = code[s] >> T; r < (1u << sb); r += 1u << (l - T))
        dt->t[base[p] + r] = e;
    }
  }
}

// One lane's bit reader: buf holds cnt valid bits (bits above cnt are either zero or the true
// next stream bits, so OR-ing a refill over them is harmless). Position of the next unread bit
// = pos * 8 - cnt. Reads past the payload see zero bytes, so a corrupt lane never reads out of
// bounds; over-consumption is caught when the lane's end is compared with the directory.
template <class T> struct Lane {
  uint64_t buf = 0, cnt = 0;
  int64_t pos = 0, left = 0;
  T *out = nullptr;
};

template <class T>
inline void refill_fast(Lane<T> &l, const uint8_t *p) { // needs pos + 8 <= payload bytes
  l.buf |= load64(p + l.pos) << l.cnt;
  l.pos += int64_t((63 - l.cnt) >> 3);
  l.cnt |= 56;
}

template <class T> inline void refill_safe(Lane<T> &l, const uint8_t *p, int64_t nbytes) {
  while (l.cnt < 56) {
    uint64_t b = l.pos < nbytes ? p[l.pos] : 0;
    l.buf |= b << l.cnt;
    l.pos++;
    l.cnt += 8;
  }
}

template <class T>
inline void decode_one(Lane<T> &l, const uint32_t *t, int T_bits, uint64_t pmask) {
  uint32_t e = t[l.buf & pmask];
  if (e & kSubFlag)
    e = t[(e >> 8) + ((l.buf >> T_bits) & ((uint64_t(1) << (e & 31)) - 1))];
  *l.out++ = static_cast<T>(e >> 8);
  const uint32_t n = e & 31;
  l.buf >>= n;
  l.cnt -= n;
}

// Decodes G lanes in lockstep while each has >= 3 symbols left and 8 readable bytes, then each
// lane's tail alone with bounded refills.
template <class T, int G>
void decode_group(Lane<T> *L, const DecodeTable &dt, const uint8_t *p, int64_t nbytes) {
  const uint32_t *t = dt.t.data();
  const int Tb = dt.primary_bits;
  const uint64_t pmask = (uint64_t(1) << Tb) - 1;
  for (;;) {
    // Each step refills once (advancing pos by <= 7 bytes) and decodes 3 codes of <= 16 bits.
    int64_t steps = INT64_MAX;
    for (int j = 0; j < G; ++j) {
      steps = std::min(steps, L[j].left / 3);
      int64_t room = nbytes - 8 - L[j].pos;
      steps = std::min(steps, room < 0 ? 0 : room / 7 + 1);
    }
    if (steps <= 0)
      break;
    for (int64_t i = 0; i < steps; ++i) {
      for (int j = 0; j < G; ++j) {
        refill_fast(L[j], p);
        decode_one(L[j], t, Tb, pmask);
        decode_one(L[j], t, Tb, pmask);
        decode_one(L[j], t, Tb, pmask);
      }
    }
    for (int j = 0; j < G; ++j)
      L[j].left -= 3 * steps;
  }
  for (int j = 0; j < G; ++j) {
    Lane<T> &l = L[j];
    for (; l.left > 0; --l.left) {
      if (l.cnt < kHuffMaxLen) {
        if (l.pos + 8 <= nbytes)
          refill_fast(l, p);
        else
          refill_safe(l, p, nbytes);
      }
      decode_one(l, t, Tb, pmask);
    }
  }
}

template <class T>
std::string decode_lanes(const DecodeTable &dt, const uint8_t *p, int64_t nbytes,
                         const std::vector<uint64_t> &off, T *out, int64_t n, int threads) {
  const int K = int(off.size());
  std::vector<Lane<T>> lanes(K);
  for (int j = 0; j < K; ++j) {
    Lane<T> &l = lanes[j];
    int64_t b = lane_begin(n, K, j);
    l.out = out + b;
    l.left = lane_begin(n, K, j + 1) - b;
    l.pos = int64_t(off[j] >> 3);
    refill_safe(l, p, nbytes);
    const uint64_t skip = off[j] & 7;
    l.buf >>= skip;
    l.cnt -= skip;
  }
  constexpr int G = 4;
  const int groups = (K + G - 1) / G;
  const int nt = resolve_threads(threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (groups > 1 && nt > 1)
  for (int g = 0; g < groups; ++g) {
    if (g * G + G <= K) {
      decode_group<T, G>(&lanes[g * G], dt, p, nbytes);
    } else {
      for (int j = g * G; j < K; ++j)
        decode_group<T, 1>(&lanes[j], dt, p, nbytes);
    }
  }
  for (int j = 0; j < K; ++j) {
    const uint64_t end = uint64_t(lanes[j].pos) * 8 - lanes[j].cnt;
    if (j + 1 < K) {
      if (end != off[j + 1])
        return "Huffman lane " + std::to_string(j) + " ends at bit " + std::to_string(end) +
               ", directory says " + std::to_string(off[j + 1]);
      continue;
    }
    if (end > uint64_t(nbytes) * 8)
      return "Huffman payload too short for the declared count";
    if ((end + 7) / 8 != uint64_t(nbytes))
      return "Huffman payload has " + std::to_string(nbytes - int64_t((end + 7) / 8)) +
             " trailing bytes";
    if (end & 7) {
      if (p[nbytes - 1] >> (end & 7))
        return "Huffman payload padding bits are not zero";
    }
  }
  return "";
}

} // namespace

std::string huffman_check_lengths(const uint8_t *len, int n_symbols) {
  uint64_t kraft = 0; // in units of 2^-16
  for (int s = 0; s < n_symbols; ++s) {
    if (!len[s])
      continue;
    if (len[s] > kHuffMaxLen)
      return "Huffman code length above 16";
    kraft += uint64_t(1) << (kHuffMaxLen - len[s]);
  }
  if (kraft > (uint64_t(1) << kHuffMaxLen))
    return "Huffman code lengths oversubscribed (Kraft sum > 1)";
  if (kraft < (uint64_t(1) << kHuffMaxLen))
    return "Huffman code lengths incomplete (Kraft sum < 1)";
  return "";
}

void huffman_lengths(const int64_t *counts, int n_symbols, uint8_t *len) {
  std::fill(len, len + n_symbols, 0);
  std::vector<int> sym;
  for (int s = 0; s < n_symbols; ++s)
    if (counts[s] > 0)
      sym.push_back(s);
  const size_t u = sym.size();
  if (u == 0)
    return;
  if (u == 1) {
    len[sym[0]] = 1;
    return;
  }
  std::stable_sort(sym.begin(), sym.end(), [&](int a, int b) { return counts[a] < counts[b]; });
  std::vector<uint64_t> leaf(u);
  for (size_t i = 0; i < u; ++i)
    leaf[i] = uint64_t(counts[sym[i]]);
  // Package-merge (coin collector): list 0 = leaves; list l merges the leaves with the pairs of
  // list l-1. Only the first 2u-2 items of any list can ever be selected, so lists are capped
  // there; a selected prefix of a list holds a prefix of the sorted leaves, so remembering which
  // items are leaves is enough to recover the lengths. Weights stay below 2^15 * 2^48.
  const size_t cap = 2 * u - 2;
  std::vector<std::vector<uint8_t>> is_leaf(kHuffMaxLen);
  std::vector<uint64_t> prev(leaf.begin(), leaf.begin() + std::min(u, cap)), cur;
  is_leaf[0].assign(prev.size(), 1);
  for (int lev = 1; lev < kHuffMaxLen; ++lev) {
    const size_t np = prev.size() / 2;
    cur.clear();
    auto &fl = is_leaf[lev];
    size_t a = 0, b = 0;
    while (cur.size() < cap && (a < u || b < np)) {
      const uint64_t pw = b < np ? prev[2 * b] + prev[2 * b + 1] : UINT64_MAX;
      if (a < u && leaf[a] <= pw) {
        cur.push_back(leaf[a++]);
        fl.push_back(1);
      } else {
        cur.push_back(pw);
        ++b;
        fl.push_back(0);
      }
    }
    prev.swap(cur);
  }
  std::vector<int64_t> bump(u + 1, 0);
  size_t m = cap;
  for (int lev = kHuffMaxLen - 1; lev >= 0; --lev) {
    const auto &fl = is_leaf[lev];
    if (m > fl.size())
      throw std::logic_error("package-merge: list shorter than the selection");
    size_t nl = 0;
    for (size_t i = 0; i < m; ++i)
      nl += fl[i];
    bump[0]++;
    bump[nl]--;
    m = 2 * (m - nl);
  }
  int64_t acc = 0;
  for (size_t i = 0; i < u; ++i) {
    acc += bump[i];
    len[sym[i]] = uint8_t(acc);
  }
}

template <class T>
static void encode_lanes(const T *sym, int64_t n, const uint8_t *len, const uint32_t *code, int K,
                         std::vector<uint8_t> *out, std::vector<uint64_t> *off) {
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; ++i)
    bits += len[sym[i]];
  out->assign((bits + 7) / 8 + 8, 0); // + 8: room for the 32-bit stores of the last bits
  off->assign(K, 0);
  uint8_t *p = out->data();
  uint64_t acc = 0;
  uint32_t nb = 0;
  for (int j = 0; j < K; ++j) {
    (*off)[j] = uint64_t(p - out->data()) * 8 + nb;
    const int64_t e = lane_begin(n, K, j + 1);
    for (int64_t i = lane_begin(n, K, j); i < e; ++i) {
      acc |= uint64_t(code[sym[i]]) << nb;
      nb += len[sym[i]];
      if (nb >= 32) {
        store32(p, uint32_t(acc));
        p += 4;
        acc >>= 32;
        nb -= 32;
      }
    }
  }
  store64(p, acc); // the last < 32 bits; bytes above them are zero
  out->resize((bits + 7) / 8);
}

void huffman_encode(const void *symbols, int elem_size, int64_t n, const uint8_t *len,
                    int n_symbols, int lanes, std::vector<uint8_t> *out,
                    std::vector<uint64_t> *lane_off) {
  std::vector<uint32_t> code(n_symbols);
  canonical_codes(len, n_symbols, code.data());
  if (elem_size == 1)
    encode_lanes(static_cast<const uint8_t *>(symbols), n, len, code.data(), lanes, out, lane_off);
  else
    encode_lanes(static_cast<const uint16_t *>(symbols), n, len, code.data(), lanes, out, lane_off);
}

std::string huffman_decode(const uint8_t *len, int n_symbols, const uint8_t *payload,
                           int64_t payload_bytes, const std::vector<uint64_t> &lane_off, void *out,
                           int elem_size, int64_t n, int threads) {
  std::string err = huffman_check_lengths(len, n_symbols);
  if (!err.empty())
    return err;
  DecodeTable dt;
  build_table(len, n_symbols, &dt);
  if (elem_size == 1)
    return decode_lanes(dt, payload, payload_bytes, lane_off, static_cast<uint8_t *>(out), n,
                        threads);
  return decode_lanes(dt, payload, payload_bytes, lane_off, static_cast<uint16_t *>(out), n,
                      threads);
}

} // namespace detail
} // namespace entropy
} // namespace wsq
