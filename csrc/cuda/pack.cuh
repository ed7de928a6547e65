// CUDA packing kernels: pack, unpack and the merge kernel remap_packed (one pass, no unpacked
// intermediate). Same C ABI as csrc/cpu/pack.h (device pointers) plus the stream; the same LSB-first
// layout, worked in groups of 8 indices (b bytes) so threads never share an output byte.
//
// Differences from the CPU kernels, by design (no synchronisation inside an op): nothing is
// counted or returned. pack writes an index that is negative or >= 2^bits as 0; remap_packed writes
// an index beyond the table as 0 (the CPU writes 0 too, then raises). Table values are masked to
// bits_out, as on the CPU.
#pragma once
#include <cstdint>

namespace wsq::cuda {

void pack(const void *idx, int64_t n, int idx_dtype, int bits, uint8_t *out, std::uintptr_t stream);

void unpack(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, void *out, int out_dtype,
            std::uintptr_t stream);

void remap_packed(const uint8_t *in, int64_t nbytes_in, int64_t n, int bits_in,
                  const int32_t *table, int64_t table_len, uint8_t *out, int bits_out,
                  std::uintptr_t stream);

} // namespace wsq::cuda
