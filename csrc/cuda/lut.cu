// CUDA dequantize and row-gather kernels (see lut.cuh). The table is converted once per block to
// the output's bits (common.h rounding, identical to the CPU) and kept in shared memory when it
// is small, so the inner loop is a pure lookup.
#include <cmath>
#include <string>

#include "device.cuh"
#include "groups.cuh"
#include "lut.cuh"

namespace wsq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSmemTableBits = 13; // 8192 entries, 32 KiB

bool is_float(int dt) { return dt == kF32 || dt == kF16 || dt == kBF16; }

// One thread per group of 8 indices; VEC: out + 8g is 16-byte aligned.
template <int DT, bool VEC>
__global__ void __launch_bounds__(kThreads)
    dequant_kernel(const uint8_t *in, int64_t nbytes, int64_t n, int bits, const float *table,
                   void *out, int unit, bool smem) {
  extern __shared__ uint32_t tab[];
  if (smem) {
    for (int j = threadIdx.x; j < (1 << bits); j += blockDim.x)
      tab[j] = float_bits(table[j], DT);
    __syncthreads();
  }
  auto look = [&](uint32_t v) -> uint32_t {
    return smem ? tab[v] : float_bits(__ldg(table + v), DT);
  };
  const int64_t groups = n / 8;
  for (int64_t g = gtid(); g < groups; g += gstride()) {
    const Group r = load_group(in, g, bits, unit);
    uint32_t o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j)
      o[j] = look(group_get(r, j, bits));
    if (VEC) {
      st8_bits<DT>(out, g * 8, o);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j)
        st1_bits<DT>(out, g * 8 + j, o[j]);
    }
  }
  if (gtid() == 0 && groups * 8 < n) {
    const Group r = load_tail(in, groups, bits, nbytes - groups * bits);
    for (int j = 0; groups * 8 + j < n; ++j)
      st1_bits<DT>(out, groups * 8 + j, look(group_get(r, j, bits)));
  }
}

// Blocks walk output rows; the threads of a block walk the row's elements (coalesced stores; the
// packed reads of neighbouring threads share bytes and hit L1).
template <int DT>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(const uint8_t *in, int64_t nbytes, int64_t num_rows, int64_t row_len, int bits,
                  const float *table, const int64_t *rows, int64_t n_rows, void *out, bool smem) {
  extern __shared__ uint32_t tab[];
  if (smem) {
    for (int j = threadIdx.x; j < (1 << bits); j += blockDim.x)
      tab[j] = float_bits(table[j], DT);
    __syncthreads();
  }
  const uint32_t nan_bits = float_bits(__int_as_float(0x7fc00000), DT);
  for (int64_t i = blockIdx.x; i < n_rows; i += gridDim.x) {
    const int64_t r = rows[i];
    const bool ok = r >= 0 && r < num_rows;
    for (int64_t j = threadIdx.x; j < row_len; j += blockDim.x) {
      uint32_t v = nan_bits;
      if (ok) {
        const uint32_t idx = read_packed(in, nbytes, r * row_len + j, bits);
        v = smem ? tab[idx] : float_bits(__ldg(table + idx), DT);
      }
      st1_bits<DT>(out, i * row_len + j, v);
    }
  }
}

void check_bits(int bits) {
  check(bits >= 1 && bits <= 16, "bits must be in 1..16, got " + std::to_string(bits));
}

} // namespace

void dequant(const uint8_t *packed, int64_t nbytes, int64_t n, int bits, const float *table,
             void *out, int out_dtype, std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check_bits(bits);
  check(is_float(out_dtype),
        "out_dtype must be float32/float16/bfloat16, got code " + std::to_string(out_dtype));
  check(nbytes >= packed_bytes(n, bits), "packed holds " + std::to_string(nbytes) + " bytes; " +
                                             std::to_string(n) + " indices need " +
                                             std::to_string(packed_bytes(n, bits)));
  if (n == 0)
    return;
  check(packed != nullptr && table != nullptr && out != nullptr, "dequant: null pointer");
  const bool smem = bits <= kSmemTableBits;
  const bool vec = aligned(out, 16);
  const int unit = group_unit(packed, bits);
  const int grid = grid_for((n + 7) / 8, kThreads, 8);
  cudaStream_t s = as_stream(stream);
  WSQ_FLOAT_SWITCH(out_dtype, DT, [&] {
    WSQ_BOOL_SWITCH(vec, VEC, [&] {
      dequant_kernel<DT, VEC><<<grid, kThreads, smem ? 4 << bits : 0, s>>>(packed, nbytes, n, bits,
                                                                           table, out, unit, smem);
    });
  });
  check_launch("dequant_kernel launch");
}

void gather_rows(const uint8_t *packed, int64_t nbytes, int64_t num_rows, int64_t row_len, int bits,
                 const float *table, const int64_t *rows, int64_t n_rows, void *out, int out_dtype,
                 std::uintptr_t stream) {
  check(num_rows >= 0 && row_len >= 0 && n_rows >= 0, "num_rows, row_len and n_rows must be >= 0");
  check_bits(bits);
  check(is_float(out_dtype),
        "out_dtype must be float32/float16/bfloat16, got code " + std::to_string(out_dtype));
  check(nbytes >= packed_bytes(num_rows * row_len, bits),
        "packed is too short for num_rows x row_len");
  if (n_rows == 0 || row_len == 0)
    return;
  check(rows != nullptr && out != nullptr && table != nullptr, "gather_rows: null pointer");
  check(num_rows == 0 || packed != nullptr, "gather_rows: null packed");
  const bool smem = bits <= kSmemTableBits;
  const int threads = row_len >= kThreads ? kThreads : static_cast<int>((row_len + 31) / 32 * 32);
  const int64_t cap = static_cast<int64_t>(device_info().sms) * 16;
  const int grid = static_cast<int>(n_rows < cap ? n_rows : cap);
  cudaStream_t s = as_stream(stream);
  WSQ_FLOAT_SWITCH(out_dtype, DT, [&] {
    gather_kernel<DT><<<grid, threads, smem ? 4 << bits : 0, s>>>(
        packed, nbytes, num_rows, row_len, bits, table, rows, n_rows, out, smem);
  });
  check_launch("gather_kernel launch");
}

} // namespace wsq::cuda
