// Groups of 8 packed indices (host and device alike). At any width b, 8 indices fill exactly b
// bytes, so a stream split at group boundaries never shares a byte between two workers: each GPU
// thread (or CPU range) reads and writes whole groups with no atomics. A group of b <= 16 bits is
// held as a 128-bit little-endian window (lo = bytes 0..7, hi = bytes 8..15).
//
// Also the bit extraction of the LUT matmul's fast path, where one lane owns 32 consecutive
// indices = b 32-bit words (`words_get`).
#pragma once
#include <cstdint>

#include "../common.h"

namespace wsq {

struct Group {
  uint64_t lo, hi;
};

// Index j (0..7) of a group at `bits` (1..16).
WSQ_HD uint32_t group_get(Group g, int j, int bits) {
  const int pos = j * bits;
  const uint32_t mask = (1u << bits) - 1u;
  uint64_t v;
  if (pos >= 64) {
    v = g.hi >> (pos - 64);
  } else if (pos == 0) {
    v = g.lo;
  } else {
    v = (g.lo >> pos) | (g.hi << (64 - pos));
  }
  return static_cast<uint32_t>(v) & mask;
}

// Puts v (< 2^bits) at index j of a group whose bits at that place are still zero.
WSQ_HD void group_put(Group *g, int j, int bits, uint32_t v) {
  const int pos = j * bits;
  const uint64_t x = v;
  if (pos >= 64) {
    g->hi |= x << (pos - 64);
  } else {
    g->lo |= x << pos;
    if (pos + bits > 64)
      g->hi |= x >> (64 - pos);
  }
}

// Byte i (0..15) of a group.
WSQ_HD uint8_t group_byte(Group g, int i) {
  return static_cast<uint8_t>((i < 8 ? g.lo >> (8 * i) : g.hi >> (8 * (i - 8))) & 0xffu);
}

// The group from `nb` (<= 16) bytes at p, byte by byte (any alignment; bytes past nb are zero).
WSQ_HD Group group_from_bytes(const uint8_t *p, int nb) {
  Group g{0, 0};
  for (int i = 0; i < nb; ++i) {
    const uint64_t b = p[i];
    if (i < 8)
      g.lo |= b << (8 * i);
    else
      g.hi |= b << (8 * (i - 8));
  }
  return g;
}

WSQ_HD void group_to_bytes(Group g, uint8_t *p, int nb) {
  for (int i = 0; i < nb; ++i)
    p[i] = group_byte(g, i);
}

// Index j (0..31) of 32 consecutive B-bit indices held in B little-endian 32-bit words. With B and
// j compile-time constants (unrolled loops) this is one or two shifts, or a funnel shift.
template <int B> WSQ_HD uint32_t words_get(const uint32_t *w, int j) {
  const int pos = j * B;
  const int wi = pos >> 5;
  const int sh = pos & 31;
  constexpr uint32_t mask = (B == 32) ? 0xffffffffu : ((1u << B) - 1u);
  if (sh + B <= 32)
    return (w[wi] >> sh) & mask;
  const uint64_t two = (static_cast<uint64_t>(w[wi + 1]) << 32) | w[wi];
  return static_cast<uint32_t>(two >> sh) & mask;
}

// The physical k (0..31, within a 32-wide chunk) that the tensor-core path feeds to mma.m16n8k16
// step `s` (0 or 1) at logical k `l` (0..15). Lane (g, t) of the A/B fragments holds logical
// k = 2t + {0,1} and 2t + 8 + {0,1}; mapping them to physical 8t + 4s + {0..3} makes each lane's
// 8 values of a row contiguous in memory (one small load), and since a dot product does not care
// about the order of k, any bijection is correct as long as A and B use the same one.
WSQ_HD int tc_phys_k(int s, int l) {
  const int t = (l & 7) >> 1;
  const int half = l >> 3;
  return 8 * t + 4 * s + 2 * half + (l & 1);
}

} // namespace wsq
