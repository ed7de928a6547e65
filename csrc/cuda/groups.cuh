// Device loads and stores of whole groups (8 indices = exactly `bits` bytes, group_hd.h) with
// the widest aligned accesses the width allows: group g starts at byte g * bits, so it is aligned
// to the largest power of two dividing `bits` (when the stream itself is 16-byte aligned).
#pragma once
#include <cstdint>

#include "group_hd.h"
#include "device.cuh"

namespace wsq::cuda {

// The access unit for groups of `bits` bytes in a stream at p: bits & -bits when p is 16-byte
// aligned (1, 2, 4, 8 or 16), else single bytes.
inline int group_unit(const void *p, int bits) { return aligned(p, 16) ? (bits & -bits) : 1; }

// Ors a word of at most 8 bytes that starts at byte `byte` (and never straddles byte 8).
__device__ __forceinline__ void put_word(Group *g, int byte, uint64_t v) {
  if (byte < 8) {
    g->lo |= v << (8 * byte);
  } else {
    g->hi |= v << (8 * (byte - 8));
  }
}

__device__ __forceinline__ Group load_group(const uint8_t *p, int64_t g, int bits, int unit) {
  const uint8_t *q = p + g * bits;
  Group r{0, 0};
  switch (unit) {
  case 16: {
    const uint4 v = *reinterpret_cast<const uint4 *>(q);
    r.lo = v.x | (static_cast<uint64_t>(v.y) << 32);
    r.hi = v.z | (static_cast<uint64_t>(v.w) << 32);
    break;
  }
  case 8: // bits == 8
    r.lo = *reinterpret_cast<const unsigned long long *>(q);
    break;
  case 4: // 4 or 12
    for (int i = 0; i < bits; i += 4)
      put_word(&r, i, *reinterpret_cast<const uint32_t *>(q + i));
    break;
  case 2: // 2, 6, 10, 14
    for (int i = 0; i < bits; i += 2)
      put_word(&r, i, *reinterpret_cast<const uint16_t *>(q + i));
    break;
  default:
    for (int i = 0; i < bits; ++i)
      put_word(&r, i, q[i]);
  }
  return r;
}

__device__ __forceinline__ void store_group(uint8_t *p, int64_t g, int bits, int unit, Group r) {
  uint8_t *q = p + g * bits;
  switch (unit) {
  case 16:
    *reinterpret_cast<uint4 *>(q) =
        make_uint4(static_cast<uint32_t>(r.lo), static_cast<uint32_t>(r.lo >> 32),
                   static_cast<uint32_t>(r.hi), static_cast<uint32_t>(r.hi >> 32));
    break;
  case 8:
    *reinterpret_cast<unsigned long long *>(q) = r.lo;
    break;
  case 4:
    for (int i = 0; i < bits; i += 4)
      *reinterpret_cast<uint32_t *>(q + i) =
          static_cast<uint32_t>(i < 8 ? r.lo >> (8 * i) : r.hi >> (8 * (i - 8)));
    break;
  case 2:
    for (int i = 0; i < bits; i += 2)
      *reinterpret_cast<uint16_t *>(q + i) =
          static_cast<uint16_t>(i < 8 ? r.lo >> (8 * i) : r.hi >> (8 * (i - 8)));
    break;
  default:
    for (int i = 0; i < bits; ++i)
      q[i] = group_byte(r, i);
  }
}

// The last, partial group: `avail` (< bits) bytes from byte offset g * bits, any alignment.
__device__ __forceinline__ Group load_tail(const uint8_t *p, int64_t g, int bits, int64_t avail) {
  return group_from_bytes(p + g * bits, static_cast<int>(avail < bits ? avail : bits));
}

} // namespace wsq::cuda
