// The only file of wsq._C that includes pybind11. Kernels take raw pointers (as integers from
// tensor.data_ptr()), sizes and dtype codes, so the module never links libtorch and one wheel serves
// every torch version. wsq/ops.py validates arguments before calling here; the GIL is released
// around every kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "common.h"
#include "cpu_features.h"
// @@includes@@ (each kernel family adds its header above this line)

namespace py = pybind11;
using ptr_t = std::uintptr_t;
using nogil = py::call_guard<py::gil_scoped_release>;

template <class T>
static T* P(ptr_t p) {
  return reinterpret_cast<T*>(p);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "wsq CPU kernels (C++17 + OpenMP, runtime-dispatched AVX2/AVX-512)";
#ifdef WSQ_VERSION
  m.attr("__version__") = WSQ_VERSION;
#endif
  m.def("detected_isa", [] { return wsq::isa_name(wsq::detected_isa()); });
  m.def("active_isa", [] { return wsq::isa_name(wsq::active_isa()); });
  m.def("set_isa", &wsq::set_isa, py::arg("name"));
  m.def("cpu_feature_list", &wsq::cpu_feature_list);
  // @@defs@@ (each kernel family adds its m.def(...) block above this line)
}
