// Scalar codec of one group (8 indices = exactly b bytes at b bits), shared by the scalar kernels
// and the SIMD kernels' edges. Header-only templates compiled for baseline x86-64: include this
// BEFORE any target pragma so that the out-of-line copies the linker keeps never use AVX
// instructions.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the LSB-first stream is read with little-endian word loads");

namespace wsq {
namespace pack_detail {

__extension__ typedef unsigned __int128 u128;

// A group at b <= 8 bits fits a 64-bit window; wider groups need two words.
template <int B> using Window = std::conditional_t<(B <= 8), uint64_t, u128>;

template <int B> inline Window<B> load_group(const uint8_t *p) {
  if constexpr (B <= 8) {
    uint64_t x = 0;
    std::memcpy(&x, p, B);
    return x;
  } else {
    uint64_t lo, hi = 0;
    std::memcpy(&lo, p, 8);
    std::memcpy(&hi, p + 8, B - 8);
    return static_cast<u128>(hi) << 64 | lo;
  }
}

template <int B> inline void store_group(uint8_t *p, Window<B> x) {
  if constexpr (B <= 8) {
    const uint64_t v = x;
    std::memcpy(p, &v, B);
  } else {
    const uint64_t lo = static_cast<uint64_t>(x), hi = static_cast<uint64_t>(x >> 64);
    std::memcpy(p, &lo, 8);
    std::memcpy(p + 8, &hi, B - 8);
  }
}

// Reads exactly B bytes.
template <int B> inline void decode_group(const uint8_t *p, uint32_t v[8]) {
  const Window<B> x = load_group<B>(p);
  constexpr uint32_t m = (1u << B) - 1u;
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    v[i] = static_cast<uint32_t>(x >> (i * B)) & m;
}

// Writes exactly B bytes; v[i] must be < 2^B.
template <int B> inline void encode_group(const uint32_t v[8], uint8_t *p) {
  Window<B> x = 0;
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    x |= static_cast<Window<B>>(v[i]) << (i * B);
  store_group<B>(p, x);
}

// The last, partial group (runtime width): decodes r < 8 indices from the `avail` bytes left.
inline void decode_partial(const uint8_t *p, int64_t avail, int bits, int r, uint32_t *v) {
  uint8_t buf[16] = {0};
  std::memcpy(buf, p, static_cast<size_t>(avail));
  uint64_t lo, hi;
  std::memcpy(&lo, buf, 8);
  std::memcpy(&hi, buf + 8, 8);
  const u128 x = static_cast<u128>(hi) << 64 | lo;
  for (int i = 0; i < r; ++i)
    v[i] = static_cast<uint32_t>(x >> (i * bits)) & ((1u << bits) - 1u);
}

// Encodes r < 8 indices (each < 2^bits) and writes the `nbytes` bytes they occupy (pad bits zero).
inline void encode_partial(const uint32_t *v, int r, int bits, uint8_t *p, int64_t nbytes) {
  u128 x = 0;
  for (int i = 0; i < r; ++i)
    x |= static_cast<u128>(v[i]) << (i * bits);
  uint8_t buf[16];
  const uint64_t lo = static_cast<uint64_t>(x), hi = static_cast<uint64_t>(x >> 64);
  std::memcpy(buf, &lo, 8);
  std::memcpy(buf + 8, &hi, 8);
  std::memcpy(p, buf, static_cast<size_t>(nbytes));
}

// Calls f(std::integral_constant<int, b>{}) for a runtime b in 1..16 (anything else: 16), so each
// width gets its own compiled loop (flash-attention's static switch) instead of runtime shifts.
template <int B = 1, class F> inline auto bits_switch(int b, F &&f) {
  if constexpr (B == 16) {
    return f(std::integral_constant<int, 16>{});
  } else {
    if (b == B)
      return f(std::integral_constant<int, B>{});
    return bits_switch<B + 1>(b, std::forward<F>(f));
  }
}

// Same for the index dtype (0 = u8, 1 = u16, 2 = i32, 3 = i64): f(T{}).
template <class F> inline auto dtype_switch(int dti, F &&f) {
  switch (dti) {
  case 0:
    return f(uint8_t{});
  case 1:
    return f(uint16_t{});
  case 2:
    return f(int32_t{});
  default:
    return f(int64_t{});
  }
}

} // namespace pack_detail
} // namespace wsq
