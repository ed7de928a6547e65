// Test-only: the host emulations of the CUDA kernels' arithmetic (cuda_host_emu.h) as the module
// _cuda_host_emu, which the tests load (tests/test_cuda.py, tests/test_cuda_determinism.py) to
// check on a machine without a GPU the very per-element / per-group arithmetic the GPU runs. Built
// by the plain C++ compiler, no CUDA toolkit needed; never installed, never in a wheel (CMake
// option WSQ_TESTING; .ci/dev_build.sh and .ci/build_wheel.sh copy it into tests/).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cuda_host_emu.h"

namespace py = pybind11;
using ptr_t = std::uintptr_t;
using nogil = py::call_guard<py::gil_scoped_release>;

namespace {
template <typename T> T *P(ptr_t p) { return reinterpret_cast<T *>(p); }
} // namespace

PYBIND11_MODULE(_cuda_host_emu, m) {
  namespace c = wsq::cuda;
  m.doc() = "wsq test-only: host emulations of the CUDA kernels' arithmetic (host pointers)";
  m.def(
      "host_histogram",
      [](ptr_t w, int64_t n, int k, float lo, float scale, int64_t block, bool priv, ptr_t counts,
         ptr_t sums) {
        if (priv)
          c::emu::histogram_private(P<const float>(w), n, k, lo, scale, P<int64_t>(counts),
                                    P<double>(sums));
        else
          c::emu::histogram(P<const float>(w), n, k, lo, scale, block, P<int64_t>(counts),
                            P<double>(sums));
      },
      nogil());
  m.def("host_fixsum_to_double",
        [](uint64_t hi, uint64_t lo, int shift) { return wsq::fixsum_to_double(hi, lo, shift); });
  m.def("host_fixsum_shift",
        [](float lo, float scale, int k) { return wsq::fixsum_params(lo, scale, k).shift; });
  m.def(
      "host_pack",
      [](ptr_t idx, int64_t n, int bits, ptr_t out) {
        c::emu::pack(P<const int64_t>(idx), n, bits, P<uint8_t>(out));
      },
      nogil());
  m.def(
      "host_unpack",
      [](ptr_t in, int64_t nbytes, int64_t n, int bits, ptr_t out) {
        c::emu::unpack(P<const uint8_t>(in), nbytes, n, bits, P<int64_t>(out));
      },
      nogil());
  m.def(
      "host_remap",
      [](ptr_t in, int64_t nbytes, int64_t n, int bits_in, ptr_t table, int64_t tn, ptr_t out,
         int bits_out) {
        c::emu::remap(P<const uint8_t>(in), nbytes, n, bits_in, P<const int32_t>(table), tn,
                      P<uint8_t>(out), bits_out);
      },
      nogil());
  m.def(
      "host_words_decode",
      [](ptr_t words, int bits, ptr_t out) {
        c::emu::words_decode_any(P<const uint32_t>(words), bits, P<uint32_t>(out));
      },
      nogil());
  m.def(
      "host_lut_matmul",
      [](ptr_t x, int64_t M, int64_t K, int64_t ldx, ptr_t packed, int64_t N, int bits, ptr_t table,
         ptr_t bias, ptr_t y, int64_t ldy, int mode) {
        c::emu::lut_matmul(P<const float>(x), M, K, ldx, P<const uint8_t>(packed), N, bits,
                           P<const float>(table), P<const float>(bias), P<float>(y), ldy, mode);
      },
      nogil(),
      "The CUDA LUT matmul's arithmetic on host memory: mode 0 = the float32 fast path "
      "(bitwise what the GPU computes), 1 = the tensor-core fragments in an emulated mma.");
  m.def("host_tc_phys_k", &wsq::tc_phys_k, py::arg("step"), py::arg("logical_k"));
}
