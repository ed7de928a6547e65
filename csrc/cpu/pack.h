// Dense bit packing of indices (issue 2, kernels 3 and 4): pack, unpack, and the merge kernel that
// applies a remap table to packed indices and repacks them in one pass.
//
// Bit order (csrc/common.h): LSB first; index i occupies stream bits [i*b, (i+1)*b); stream bit j
// is bit j % 8 of byte j / 8; ceil(n*b/8) bytes; pad bits zero. Every path works on *groups* of 8
// indices, which fill exactly b bytes at any width b, so groups never share a byte: threads split
// the stream at group boundaries and the SIMD paths load and store whole groups. All paths (scalar,
// AVX2, AVX-512) give bit-identical output. Counts and offsets are int64 (streams past 2^31
// indices).
#pragma once
#include <cstdint>

namespace wsq {

// Packs n indices of dtype kU8/kU16/kI32/kI64 at `bits` (1..16) into out (ceil(n*bits/8) bytes).
// Returns how many values were negative or >= 2^bits (counted in the same pass); the bytes written
// for such inputs are unspecified, but nothing outside out[0, ceil(n*bits/8)) is ever written.
int64_t pack(const void *idx, int64_t n, int idx_dtype, int bits, uint8_t *out);

// The n indices in packed (nbytes must be ceil(n*bits/8)) into out as kU8/kU16/kI32/kI64.
void unpack(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, void *out, int out_dtype);

// out index i = table[in index i], read at bits_in and written at bits_out, in one pass with no
// unpacked intermediate array. Returns how many indices were >= table_len (those are written as 0
// and never used to read memory). Table values are masked to bits_out (the caller checks they fit).
int64_t remap_packed(const uint8_t *in, int64_t nbytes_in, int64_t n, int bits_in,
                     const int32_t *table, int64_t table_len, uint8_t *out, int bits_out);

// ---- internal: per-ISA range kernels shared by pack.cpp and pack_avx*.cpp
// ------------------------
namespace pack_detail {

// Each kernel handles whole groups [g0, g1) of 8 indices; pack.cpp does the threading and the last
// partial group. Pointers are to the start of the whole array / stream.
using PackFn = int64_t (*)(const void *idx, uint8_t *out, int64_t g0, int64_t g1);
using UnpackFn = void (*)(const uint8_t *in, void *out, int64_t g0, int64_t g1);
// tbl: 2^bits_in entries, values masked to bits_out, 0 past len; len: the caller's table length.
using RemapFn = int64_t (*)(const uint8_t *in, uint8_t *out, const uint32_t *tbl, int64_t len,
                            int64_t g0, int64_t g1);

// dtype index: 0 = u8, 1 = u16, 2 = i32, 3 = i64; bits 1..16. nullptr: no kernel at this level
// for this case (the caller falls back to the next lower level).
PackFn pack_scalar(int dti, int bits);
UnpackFn unpack_scalar(int dti, int bits);
RemapFn remap_scalar(int bits_in, int bits_out);
PackFn pack_avx2(int dti, int bits);
UnpackFn unpack_avx2(int dti, int bits);
RemapFn remap_avx2(int bits_in, int bits_out);
PackFn pack_avx512(int dti, int bits);
UnpackFn unpack_avx512(int dti, int bits);
RemapFn remap_avx512(int bits_in, int bits_out);

} // namespace pack_detail
} // namespace wsq
