// The only file of wsq._cuda that includes pybind11. Kernels take raw device pointers, sizes, dtype
// codes and the caller's CUDA stream (torch.cuda.current_stream().cuda_stream), never libtorch.
// They run on the current device (wsq/kernels/cuda.py makes it the tensors' device) and release the
// GIL. Importing this module initialises no device. The host emulations of the kernels'
// arithmetic are not here: they are test-only (csrc/testing/, the tests' _cuda_host_emu module).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binning.cuh"
#include "lut.cuh"
#include "pack.cuh"
#include "runtime.h"

namespace py = pybind11;
using ptr_t = std::uintptr_t;
using nogil = py::call_guard<py::gil_scoped_release>;

namespace {
template <typename T> T *P(ptr_t p) { return reinterpret_cast<T *>(p); }
} // namespace

PYBIND11_MODULE(_cuda, m) {
  namespace c = wsq::cuda;
  m.doc() = "wsq CUDA kernels";
  m.def("device_count", &c::device_count,
        "Number of visible CUDA devices (0 when there is no driver or device).");
  m.def("runtime_version", &c::runtime_version);
  m.def("driver_version", &c::driver_version,
        "The installed driver's CUDA version (e.g. 12040), 0 without a driver.");
  m.def("device_error", &c::device_error,
        "The CUDA runtime's reason for seeing no device (error name and text), '' when one is seen.");
  m.def(
      "fill_u8",
      [](ptr_t p, int64_t n, int value, ptr_t stream) {
        c::fill_u8(P<uint8_t>(p), n, value, stream);
      },
      nogil());

  // ---- binning (cuda/binning.cuh)
  m.def(
      "minmax",
      [](ptr_t w, int64_t n, int dt, ptr_t out, ptr_t stream) {
        c::minmax(P<const void>(w), n, dt, P<double>(out), stream);
      },
      nogil(), "Writes (lo, hi, nonfinite) as 3 float64 to out (device memory).");
  m.def("histogram_workspace_bytes", &c::histogram_workspace_bytes);
  m.def(
      "histogram",
      [](ptr_t w, int64_t n, int dt, int k, float lo, float scale, ptr_t counts, ptr_t sums,
         ptr_t idx, int idt, ptr_t ws, ptr_t stream) {
        c::histogram(P<const void>(w), n, dt, k, lo, scale, P<int64_t>(counts), P<double>(sums),
                     P<void>(idx), idt, P<void>(ws), stream);
      },
      nogil());
  m.def(
      "relabel",
      [](ptr_t idx, int64_t n, int dt, ptr_t table, int64_t tn, ptr_t out, int odt, ptr_t stream) {
        c::relabel(P<const void>(idx), n, dt, P<const int32_t>(table), tn, P<void>(out), odt,
                   stream);
      },
      nogil());
  m.def(
      "fake_quant",
      [](ptr_t w, int64_t n, int dt, int k, float lo, float scale, ptr_t values, ptr_t out, int odt,
         ptr_t stream) {
        c::fake_quant(P<const void>(w), n, dt, k, lo, scale, P<const float>(values), P<void>(out),
                      odt, stream);
      },
      nogil());

  // ---- packing (cuda/pack.cuh)
  m.def(
      "pack",
      [](ptr_t idx, int64_t n, int dt, int bits, ptr_t out, ptr_t stream) {
        c::pack(P<const void>(idx), n, dt, bits, P<uint8_t>(out), stream);
      },
      nogil());
  m.def(
      "unpack",
      [](ptr_t packed, int64_t nbytes, int64_t n, int bits, ptr_t out, int odt, ptr_t stream) {
        c::unpack(P<const uint8_t>(packed), nbytes, n, bits, P<void>(out), odt, stream);
      },
      nogil());
  m.def(
      "remap_packed",
      [](ptr_t in, int64_t nbytes, int64_t n, int bits_in, ptr_t table, int64_t tn, ptr_t out,
         int bits_out, ptr_t stream) {
        c::remap_packed(P<const uint8_t>(in), nbytes, n, bits_in, P<const int32_t>(table), tn,
                        P<uint8_t>(out), bits_out, stream);
      },
      nogil());

  // ---- codebook lookup (cuda/lut.cuh)
  m.def(
      "dequant",
      [](ptr_t packed, int64_t nbytes, int64_t n, int bits, ptr_t table, ptr_t out, int odt,
         ptr_t stream) {
        c::dequant(P<const uint8_t>(packed), nbytes, n, bits, P<const float>(table), P<void>(out),
                   odt, stream);
      },
      nogil());
  m.def(
      "gather_rows",
      [](ptr_t packed, int64_t nbytes, int64_t num_rows, int64_t row_len, int bits, ptr_t table,
         ptr_t rows, int64_t n_rows, ptr_t out, int odt, ptr_t stream) {
        c::gather_rows(P<const uint8_t>(packed), nbytes, num_rows, row_len, bits,
                       P<const float>(table), P<const int64_t>(rows), n_rows, P<void>(out), odt,
                       stream);
      },
      nogil());
  m.def("lut_matmul_workspace_bytes", &c::lut_matmul_workspace_bytes, py::arg("M"), py::arg("K"),
        py::arg("N"), py::arg("bits"), py::arg("mode"));
  m.def(
      "lut_matmul",
      [](ptr_t x, int64_t M, int64_t K, int64_t ldx, ptr_t packed, int64_t nbytes, int64_t N,
         int bits, ptr_t table, ptr_t bias, ptr_t y, int64_t ldy, ptr_t ws, int64_t ws_bytes,
         int mode, ptr_t stream) {
        c::lut_matmul(P<const float>(x), M, K, ldx, P<const uint8_t>(packed), nbytes, N, bits,
                      P<const float>(table), P<const float>(bias), P<float>(y), ldy, P<void>(ws),
                      ws_bytes, mode, stream);
      },
      nogil());
}
