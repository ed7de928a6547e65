// Host helpers for the CUDA module: device queries and error translation. Every CUDA call's error
// becomes a C++ exception naming the call, which pybind11 turns into a Python RuntimeError.
#pragma once
#include <cstdint>
#include <string>

namespace wsq::cuda {

int device_count();
int runtime_version();
// Raises std::runtime_error("<what>: <cuda error string>") when code != 0 (cudaSuccess).
void check_cuda(int code, const char* what);
// Trivial kernel kept as a smoke test of the toolchain and the stream plumbing.
void fill_u8(uint8_t* p, int64_t n, int value, std::uintptr_t stream);

}  // namespace wsq::cuda
