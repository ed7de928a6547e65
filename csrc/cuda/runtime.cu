#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime.h"

namespace wsq::cuda {

int device_count() {
  int n = 0;
  // No driver or no device is not an error here: it means "no CUDA", which wsq.info() reports.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); // clear the sticky error so later queries start clean
    return 0;
  }
  return n;
}

std::string device_error() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  return n > 0 ? std::string() : std::string("cudaGetDeviceCount returned 0 devices");
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

void check_cuda(int code, const char *what) {
  if (code != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " +
                             cudaGetErrorString(static_cast<cudaError_t>(code)));
}

void check_launch(const char *what) { check_cuda(cudaGetLastError(), what); }

const DeviceInfo &device_info() {
  static std::mutex mu;
  static std::vector<DeviceInfo> cache;
  static std::vector<bool> known;
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(cache.size()) <= dev) {
    cache.resize(dev + 1);
    known.resize(dev + 1, false);
  }
  if (!known[dev]) {
    DeviceInfo d{};
    check_cuda(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev),
               "cudaDeviceGetAttribute(MultiProcessorCount)");
    check_cuda(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
               "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    check_cuda(
        cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerMultiprocessor)");
    check_cuda(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, dev),
               "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    cache[dev] = d;
    known[dev] = true;
  }
  return cache[dev];
}

int grid_for(int64_t items, int threads, int per_sm) {
  const int64_t need = (items + threads - 1) / threads;
  const int64_t full = static_cast<int64_t>(device_info().sms) * per_sm;
  const int64_t g = need < full ? need : full;
  return static_cast<int>(g < 1 ? 1 : g);
}

void allow_smem(const void *kernel, int bytes, const char *what) {
  if (bytes <= 48 * 1024)
    return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
             what);
}

__global__ void fill_u8_kernel(uint8_t *p, int64_t n, uint8_t v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    p[i] = v;
}

void fill_u8(uint8_t *p, int64_t n, int value, std::uintptr_t stream) {
  if (n <= 0)
    return;
  int blocks = static_cast<int>((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
  fill_u8_kernel<<<blocks, 256, 0, reinterpret_cast<cudaStream_t>(stream)>>>(p, n, (uint8_t)value);
  check_launch("fill_u8 launch");
}

} // namespace wsq::cuda
