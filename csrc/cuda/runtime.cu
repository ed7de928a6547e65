#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "runtime.h"

namespace wsq::cuda {

int device_count() {
  int n = 0;
  // No driver or no device is not an error here: it means "no CUDA", which wsq.info() reports.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later queries start clean
    return 0;
  }
  return n;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

void check_cuda(int code, const char* what) {
  if (code != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " +
                             cudaGetErrorString(static_cast<cudaError_t>(code)));
}

__global__ void fill_u8_kernel(uint8_t* p, int64_t n, uint8_t v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    p[i] = v;
}

void fill_u8(uint8_t* p, int64_t n, int value, std::uintptr_t stream) {
  if (n <= 0) return;
  int blocks = static_cast<int>((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
  fill_u8_kernel<<<blocks, 256, 0, reinterpret_cast<cudaStream_t>(stream)>>>(p, n, (uint8_t)value);
  check_cuda(cudaGetLastError(), "fill_u8 launch");
}

}  // namespace wsq::cuda
