// The only file of wsq._cuda that includes pybind11. Kernels take raw device pointers, sizes, dtype
// codes and the caller's CUDA stream (torch.cuda.current_stream().cuda_stream), never libtorch.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cuda/runtime.h"
// @@includes@@

namespace py = pybind11;
using ptr_t = std::uintptr_t;
using nogil = py::call_guard<py::gil_scoped_release>;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "wsq CUDA kernels";
  m.def("device_count", &wsq::cuda::device_count,
        "Number of visible CUDA devices (0 when there is no driver or device).");
  m.def("runtime_version", &wsq::cuda::runtime_version);
  m.def("fill_u8", [](ptr_t p, int64_t n, int value, ptr_t stream) {
    wsq::cuda::fill_u8(reinterpret_cast<uint8_t*>(p), n, value, stream);
  }, nogil());
  // @@defs@@
}
