// Per-element logic shared by every backend. Each function is __host__ __device__ so that the CPU
// build and the CUDA build compile the very same arithmetic: the CPU tests then exercise what the GPU
// runs, and indices cannot differ between backends.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define WSQ_HD __host__ __device__ __forceinline__
#else
#define WSQ_HD inline
#endif

namespace wsq {

// Element type codes shared with wsq/kernels/args.py (_CODES). Keep in sync.
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kU8 = 3, kU16 = 4, kI32 = 5, kI64 = 6 };

// The binning formula, fixed so no backend can differ:
//   t   = (w - lo) * scale        two correctly rounded float32 operations, never fused
//   idx = (int) min(max(floor(t), 0), k - 1)
// `scale` is float32(k / (double(hi) - double(lo))), computed once on the host (wsq/binning.py).
// Clamping in the float domain first keeps the conversion defined for +-inf.
// Builds use -ffp-contract=off (CPU) and --fmad=false (CUDA) so (w - lo) * scale is never an FMA.
WSQ_HD int32_t bin_index(float w, float lo, float scale, float kmax) {
  float t = (w - lo) * scale;
  t = floorf(t);
  t = t < 0.0f ? 0.0f : t;
  t = t > kmax ? kmax : t;
  return static_cast<int32_t>(t);
}

// Dense bit packing, LSB first: index i occupies stream bits [i*b, (i+1)*b); stream bit j is bit
// (j % 8) of byte j / 8. A packed array of n b-bit indices has exactly ceil(n*b/8) bytes; pad bits
// in the last byte are zero.
WSQ_HD int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

// Reads the b-bit value at element i from a packed stream of `nbytes` bytes, byte by byte so that
// it never reads past the end. Fast paths in the kernels use wider loads where they are in bounds.
WSQ_HD uint32_t read_packed(const uint8_t* p, int64_t nbytes, int64_t i, int bits) {
  int64_t bit = i * bits;
  int64_t byte = bit >> 3;
  int shift = static_cast<int>(bit & 7);
  uint32_t v = 0;
  int need = (shift + bits + 7) >> 3;  // at most 3 bytes for bits <= 16
  for (int j = 0; j < need && byte + j < nbytes; ++j) v |= static_cast<uint32_t>(p[byte + j]) << (8 * j);
  return (v >> shift) & ((1u << bits) - 1u);
}

// Round-to-nearest-even float32 -> float16 / bfloat16 bit patterns (host and device alike; NaN kept).
WSQ_HD uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

WSQ_HD float bf16_bits_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

WSQ_HD uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                                             // subnormal or zero in fp16
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);         // < 2^-25: rounds to 0
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  // 14 + (113 - e) ... yields m >> (shift) as the fp16 subnormal
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = ax - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t m = r & 0x1fffu;
  r >>= 13;
  if (m > 0x1000u || (m == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

WSQ_HD float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t u;
  if (e == 0) {
    if (m == 0) {
      u = sign;
    } else {  // subnormal: normalise
      e = 113;
      while (!(m & 0x400u)) { m <<= 1; --e; }
      u = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Stores a float32 value into an output of element type `dt` (kF32, kF16 or kBF16).
WSQ_HD void store_float(void* out, int64_t i, float v, int dt) {
  if (dt == kF32) {
    static_cast<float*>(out)[i] = v;
  } else if (dt == kF16) {
    static_cast<uint16_t*>(out)[i] = f32_to_f16_bits(v);
  } else {
    static_cast<uint16_t*>(out)[i] = f32_to_bf16_bits(v);
  }
}

WSQ_HD float load_float(const void* in, int64_t i, int dt) {
  if (dt == kF32) return static_cast<const float*>(in)[i];
  if (dt == kF16) return f16_bits_to_f32(static_cast<const uint16_t*>(in)[i]);
  return bf16_bits_to_f32(static_cast<const uint16_t*>(in)[i]);
}

// Host-side argument checks: the Python layer validates first; these guard the C ABI itself.
inline void check(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

}  // namespace wsq
