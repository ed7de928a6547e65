// Device-side helpers shared by the CUDA kernel families: stream cast, vector loads of 8 elements,
// element-type dispatch and warp reductions. The per-element arithmetic itself lives in the
// host/device headers (../common.h, fixsum_hd.h, group_hd.h) so the CPU build compiles it
// too.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common.h"
#include "runtime.h"

namespace wsq::cuda {

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

inline bool aligned(const void *p, int bytes) {
  return (reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes)) == 0;
}

// Global thread id and stride of a 1-D grid, in 64-bit so loops pass 2^31 elements.
__device__ __forceinline__ int64_t gtid() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t gstride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Exact widening of a stored float element (fp16/bf16 -> fp32 is exact, so the hardware
// conversion gives the same value as common.h's software one).
template <int DT> __device__ __forceinline__ float ld_float(const void *p, int64_t i) {
  if constexpr (DT == kF32) {
    return static_cast<const float *>(p)[i];
  } else if constexpr (DT == kF16) {
    return __half2float(static_cast<const __half *>(p)[i]);
  } else {
    return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  }
}

__device__ __forceinline__ float h2f(uint32_t bits16) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
}
__device__ __forceinline__ float b2f(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

// Elements [i, i + 8) as floats; p + i must be 16-byte aligned (32 bytes of fp32 are two loads).
template <int DT> __device__ __forceinline__ void ld8_float(const void *p, int64_t i, float v[8]) {
  if constexpr (DT == kF32) {
    const float4 *q = reinterpret_cast<const float4 *>(static_cast<const float *>(p) + i);
    const float4 a = q[0], b = q[1];
    v[0] = a.x;
    v[1] = a.y;
    v[2] = a.z;
    v[3] = a.w;
    v[4] = b.x;
    v[5] = b.y;
    v[6] = b.z;
    v[7] = b.w;
  } else {
    const uint4 a = *reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(p) + i);
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[2 * j] = DT == kF16 ? h2f(w[j] & 0xffffu) : b2f(w[j] & 0xffffu);
      v[2 * j + 1] = DT == kF16 ? h2f(w[j] >> 16) : b2f(w[j] >> 16);
    }
  }
}

// Stores 8 output elements given as raw bits: fp32 bits, or 16-bit patterns (p + i 16-byte
// aligned).
template <int DT>
__device__ __forceinline__ void st8_bits(void *p, int64_t i, const uint32_t v[8]) {
  if constexpr (DT == kF32) {
    uint4 *q = reinterpret_cast<uint4 *>(static_cast<uint32_t *>(p) + i);
    q[0] = make_uint4(v[0], v[1], v[2], v[3]);
    q[1] = make_uint4(v[4], v[5], v[6], v[7]);
  } else {
    *reinterpret_cast<uint4 *>(static_cast<uint16_t *>(p) + i) = make_uint4(
        v[0] | (v[1] << 16), v[2] | (v[3] << 16), v[4] | (v[5] << 16), v[6] | (v[7] << 16));
  }
}

template <int DT> __device__ __forceinline__ void st1_bits(void *p, int64_t i, uint32_t v) {
  if constexpr (DT == kF32) {
    static_cast<uint32_t *>(p)[i] = v;
  } else {
    static_cast<uint16_t *>(p)[i] = static_cast<uint16_t>(v);
  }
}

// Output bits of a float32 value in dtype DT (common.h rounding: identical to the CPU kernels).
__device__ __forceinline__ uint32_t float_bits(float f, int dt) {
  if (dt == kF32)
    return __float_as_uint(f);
  return dt == kF16 ? f32_to_f16_bits(f) : f32_to_bf16_bits(f);
}

// Index element types (kU8, kU16, kI32, kI64).
template <int DT> struct IndexType;
template <> struct IndexType<kU8> {
  using T = uint8_t;
};
template <> struct IndexType<kU16> {
  using T = uint16_t;
};
template <> struct IndexType<kI32> {
  using T = int32_t;
};
template <> struct IndexType<kI64> {
  using T = int64_t;
};

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

} // namespace wsq::cuda

// Expands `body` with the compile-time constant `NAME` equal to the runtime `value`, one of the
// listed cases (flash-attention's static-switch pattern, instead of hand-written macro walls).
#define WSQ_FLOAT_SWITCH(value, NAME, ...)                                                         \
  [&] {                                                                                            \
    if ((value) == ::wsq::kF32) {                                                                  \
      constexpr int NAME = ::wsq::kF32;                                                            \
      return __VA_ARGS__();                                                                        \
    } else if ((value) == ::wsq::kF16) {                                                           \
      constexpr int NAME = ::wsq::kF16;                                                            \
      return __VA_ARGS__();                                                                        \
    } else {                                                                                       \
      constexpr int NAME = ::wsq::kBF16;                                                           \
      return __VA_ARGS__();                                                                        \
    }                                                                                              \
  }()

#define WSQ_INDEX_SWITCH(value, NAME, ...)                                                         \
  [&] {                                                                                            \
    if ((value) == ::wsq::kU8) {                                                                   \
      constexpr int NAME = ::wsq::kU8;                                                             \
      return __VA_ARGS__();                                                                        \
    } else if ((value) == ::wsq::kU16) {                                                           \
      constexpr int NAME = ::wsq::kU16;                                                            \
      return __VA_ARGS__();                                                                        \
    } else if ((value) == ::wsq::kI32) {                                                           \
      constexpr int NAME = ::wsq::kI32;                                                            \
      return __VA_ARGS__();                                                                        \
    } else {                                                                                       \
      constexpr int NAME = ::wsq::kI64;                                                            \
      return __VA_ARGS__();                                                                        \
    }                                                                                              \
  }()

#define WSQ_BOOL_SWITCH(cond, NAME, ...)                                                           \
  [&] {                                                                                            \
    if (cond) {                                                                                    \
      constexpr bool NAME = true;                                                                  \
      return __VA_ARGS__();                                                                        \
    } else {                                                                                       \
      constexpr bool NAME = false;                                                                 \
      return __VA_ARGS__();                                                                        \
    }                                                                                              \
  }()
