// Host helpers for the CUDA module: device queries, error translation and launch sizing. Every
// CUDA call's error becomes a C++ exception naming the call, which pybind11 turns into a Python
// RuntimeError. Kernels run on the caller's stream (torch.cuda.current_stream().cuda_stream) on the
// current device, which the Python layer (wsq/kernels/cuda.py) sets to the tensors' device.
#pragma once
#include <cstdint>
#include <string>

namespace wsq::cuda {

int device_count();
// Why device_count() is 0: the runtime's own error (e.g. "CUDA driver version is insufficient for
// CUDA runtime version", "no CUDA-capable device is detected"), or "" when it is not 0.
std::string device_error();
int runtime_version();
int driver_version(); // the installed driver's CUDA version (0 when there is no driver)
// Raises std::runtime_error("<what>: <cuda error string>") when code != 0 (cudaSuccess).
void check_cuda(int code, const char *what);
// Checks the launch just made (cudaGetLastError) and names it in the error.
void check_launch(const char *what);
// Trivial kernel kept as a smoke test of the toolchain and the stream plumbing.
void fill_u8(uint8_t *p, int64_t n, int value, std::uintptr_t stream);

// Properties of the current device, read once per device (no synchronisation).
struct DeviceInfo {
  int sms;         // multiprocessors
  int smem_optin;  // largest dynamic shared memory a block may opt in to (bytes)
  int smem_per_sm; // shared memory of one multiprocessor (bytes)
  int cc_major;
};
const DeviceInfo &device_info();

// Blocks for a grid-stride loop over `items` work items of `threads` each: enough to fill the
// device `per_sm` times over, never more than the work needs, at least 1.
int grid_for(int64_t items, int threads, int per_sm);

// Allows a kernel more than 48 KiB of dynamic shared memory (no-op below that).
void allow_smem(const void *kernel, int bytes, const char *what);

} // namespace wsq::cuda
