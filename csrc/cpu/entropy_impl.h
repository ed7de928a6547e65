// Internals shared by entropy.cpp (format), entropy_huffman.cpp and entropy_rans.cpp. Not part of the bindings.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "entropy.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wsq entropy coders load words with memcpy and assume a little-endian host"
#endif

namespace wsq {
namespace entropy {
namespace detail {

constexpr int kMaxSymbols = 65536;
constexpr int kHuffMaxLen = 16;
constexpr int64_t kMaxCount = int64_t(1) << 48; // keeps package-merge weights and n*j in 64 bits
constexpr int kMaxLanes = 4096;
constexpr uint64_t kAnsL = uint64_t(1) << 31; // rANS state interval [L, L << 32)
constexpr int kAnsMinScale = 12, kAnsMaxScale = 16;

inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store32(uint8_t *p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void store64(uint8_t *p, uint64_t v) { std::memcpy(p, &v, 8); }

// First element of lane j of K over n elements (balanced contiguous chunks).
inline int64_t lane_begin(int64_t n, int lanes, int j) {
  return static_cast<int64_t>(static_cast<uint64_t>(n) * static_cast<uint64_t>(j) /
                              static_cast<uint64_t>(lanes));
}

// Lanes as a function of the element count alone (so sizes follow from the histogram). ANS pays
// 8 bytes of final state per lane, so it starts interleaving later than Huffman. One group of 8
// lanes per 2M elements lets big streams decode on several cores.
inline int lanes_for(int coder, int64_t n) {
  if (n < (coder == kAns ? 32768 : 4096))
    return 1;
  int64_t groups = (n + (int64_t(1) << 21) - 1) >> 21;
  return 8 * static_cast<int>(groups < 32 ? groups : 32);
}

// OpenMP thread count for a `threads` argument (<= 0: the runtime's default).
inline int resolve_threads(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// Bytes needed to write v little-endian (at least 1).
inline int byte_width(uint64_t v) {
  int w = 1;
  while (w < 8 && (v >> (8 * w)) != 0)
    ++w;
  return w;
}

// ---- entropy_huffman.cpp
// Optimal code lengths (<= kHuffMaxLen) for counts by package-merge; 0 for unused symbols; a single
// used symbol gets length 1 (it is coded with 0 bits).
void huffman_lengths(const int64_t *counts, int n_symbols, uint8_t *len);
// Appends the payload; lane_off[j] receives the bit offset where lane j starts.
void huffman_encode(const void *symbols, int elem_size, int64_t n, const uint8_t *len,
                    int n_symbols, int lanes, std::vector<uint8_t> *out,
                    std::vector<uint64_t> *lane_off);
// Validates lengths (range, Kraft equality) and decodes; lane_off has K entries (lane_off[0] = 0).
std::string huffman_decode(const uint8_t *len, int n_symbols, const uint8_t *payload,
                           int64_t payload_bytes, const std::vector<uint64_t> &lane_off, void *out,
                           int elem_size, int64_t n, int threads);
// "" when the lengths of the used symbols form a complete prefix code with lengths 1..16.
std::string huffman_check_lengths(const uint8_t *len, int n_symbols);

// ---- entropy_rans.cpp
// Frequencies summing to 2^scale_bits, each used symbol >= 1, minimising the coded size.
void ans_quantize(const int64_t *counts, int n_symbols, int scale_bits, uint32_t *freq);
// Proven upper bound on the payload bits for this histogram and these frequencies.
uint64_t ans_payload_bound_bits(const int64_t *counts, int n_symbols, const uint32_t *freq,
                                int scale_bits, int lanes);
// Appends the payload; lane_off[j] receives the word offset where lane j starts.
void ans_encode(const void *symbols, int elem_size, int64_t n, const uint32_t *freq, int n_symbols,
                int scale_bits, int lanes, std::vector<uint8_t> *out,
                std::vector<uint64_t> *lane_off);
std::string ans_decode(const uint32_t *freq, int n_symbols, int scale_bits, const uint8_t *payload,
                       int64_t payload_bytes, const std::vector<uint64_t> &lane_off, void *out,
                       int elem_size, int64_t n, int threads);

} // namespace detail
} // namespace entropy
} // namespace wsq
