// The only file of wsq._C that includes pybind11. Kernels take raw pointers (as integers from
// tensor.data_ptr()), sizes and dtype codes, so the module never links libtorch and one wheel serves
// every torch version. wsq/kernels/ops.py validates arguments before calling here; the GIL is released
// around every kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "../common.h"
#include "cpu_features.h"
#include "threads.h"
#include "binning.h"
#include "pack.h"
#include "entropy.h"
#include "lut.h"
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
  wsq::install_fork_handler();
#ifdef WSQ_VERSION
  m.attr("__version__") = WSQ_VERSION;
#endif
  m.def("detected_isa", [] { return wsq::isa_name(wsq::detected_isa()); });
  m.def("active_isa", [] { return wsq::isa_name(wsq::active_isa()); });
  m.def("set_isa", &wsq::set_isa, py::arg("name"));
  m.def("cpu_feature_list", &wsq::cpu_feature_list);
  m.def("openmp_threads", &wsq::openmp_threads);
  // binning family (binning.h)
  m.def(
      "minmax",
      [](ptr_t w, int64_t n, int dt) {
        wsq::MinMax r = wsq::minmax(P<const void>(w), n, dt);
        return std::make_tuple(r.lo, r.hi, r.nonfinite);
      },
      nogil(), py::arg("w"), py::arg("n"), py::arg("dtype"));
  m.def(
      "histogram",
      [](ptr_t w, int64_t n, int wdt, int k, double lo, double scale, ptr_t counts, ptr_t sums,
         ptr_t idx, int idt) {
        wsq::histogram(P<const void>(w), n, wdt, k, static_cast<float>(lo), static_cast<float>(scale),
                       P<int64_t>(counts), P<double>(sums), P<void>(idx), idt);
      },
      nogil(), py::arg("w"), py::arg("n"), py::arg("w_dtype"), py::arg("k"), py::arg("lo"),
      py::arg("scale"), py::arg("counts"), py::arg("sums"), py::arg("idx"), py::arg("idx_dtype"));
  m.def(
      "relabel",
      [](ptr_t idx, int64_t n, int idt, ptr_t table, int64_t table_len, ptr_t out, int odt) {
        wsq::relabel(P<const void>(idx), n, idt, P<const int32_t>(table), table_len, P<void>(out), odt);
      },
      nogil(), py::arg("idx"), py::arg("n"), py::arg("in_dtype"), py::arg("table"),
      py::arg("table_len"), py::arg("out"), py::arg("out_dtype"));
  m.def(
      "fake_quant",
      [](ptr_t w, int64_t n, int wdt, int k, double lo, double scale, ptr_t values, ptr_t out, int odt) {
        wsq::fake_quant(P<const void>(w), n, wdt, k, static_cast<float>(lo), static_cast<float>(scale),
                        P<const float>(values), P<void>(out), odt);
      },
      nogil(), py::arg("w"), py::arg("n"), py::arg("w_dtype"), py::arg("k"), py::arg("lo"),
      py::arg("scale"), py::arg("values"), py::arg("out"), py::arg("out_dtype"));
  // pack family: dense LSB-first bit packing and the packed-index remap (merge) kernel
  m.def(
      "pack",
      [](ptr_t idx, int64_t n, int idx_dtype, int bits, ptr_t out) {
        return wsq::pack(P<const void>(idx), n, idx_dtype, bits, P<uint8_t>(out));
      },
      py::arg("idx"), py::arg("n"), py::arg("idx_dtype"), py::arg("bits"), py::arg("out"), nogil());
  m.def(
      "unpack",
      [](ptr_t packed, int64_t nbytes, int64_t n, int bits, ptr_t out, int out_dtype) {
        wsq::unpack(P<const uint8_t>(packed), nbytes, n, bits, P<void>(out), out_dtype);
      },
      py::arg("packed"), py::arg("nbytes"), py::arg("n"), py::arg("bits"), py::arg("out"),
      py::arg("out_dtype"), nogil());
  m.def(
      "remap_packed",
      [](ptr_t in, int64_t nbytes_in, int64_t n, int bits_in, ptr_t table, int64_t table_len,
         ptr_t out, int bits_out) {
        return wsq::remap_packed(P<const uint8_t>(in), nbytes_in, n, bits_in,
                                 P<const int32_t>(table), table_len, P<uint8_t>(out), bits_out);
      },
      py::arg("packed"), py::arg("nbytes_in"), py::arg("n"), py::arg("bits_in"), py::arg("table"),
      py::arg("table_len"), py::arg("out"), py::arg("bits_out"), nogil());
  // ---- entropy coding (entropy.h). Defects come back as messages; wsq/io/entropy.py raises
  // FormatError (decode) or ValueError (encode) with them.
  {
    auto sizes_dict = [](const wsq::entropy::Sizes& z) {
      py::dict d;
      d["coder"] = z.coder;
      d["n_symbols"] = z.n_symbols;
      d["n"] = z.n;
      d["used"] = z.used;
      d["scale_bits"] = z.scale_bits;
      d["lanes"] = z.lanes;
      d["header_bytes"] = z.header_bytes;
      d["table_bytes"] = z.table_bytes;
      d["directory_bytes"] = z.directory_bytes;
      d["payload_bytes"] = z.payload_bytes;
      d["exact"] = z.exact;
      return d;
    };
    m.def(
        "entropy_encode",
        [](ptr_t symbols, int elem_size, int64_t n, int n_symbols, int coder) {
          std::vector<uint8_t> out;
          std::string err;
          {
            py::gil_scoped_release release;
            err = wsq::entropy::encode(P<const void>(symbols), elem_size, n, n_symbols, coder, &out);
          }
          if (!err.empty()) throw py::value_error(err);
          return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
        },
        py::arg("symbols"), py::arg("elem_size"), py::arg("n"), py::arg("n_symbols"),
        py::arg("coder"));
    m.def(
        "entropy_decode",
        [](ptr_t data, int64_t len, ptr_t out, int elem_size, int64_t n, int n_symbols,
           int threads) {
          return wsq::entropy::decode(P<const uint8_t>(data), len, P<void>(out), elem_size, n,
                                      n_symbols, threads);
        },
        py::arg("data"), py::arg("len"), py::arg("out"), py::arg("elem_size"), py::arg("n"),
        py::arg("n_symbols"), py::arg("threads"), nogil());
    m.def(
        "entropy_histogram",
        [](ptr_t symbols, int elem_size, int64_t n, int n_symbols, ptr_t counts) {
          return wsq::entropy::histogram(P<const void>(symbols), elem_size, n, n_symbols,
                                         P<int64_t>(counts));
        },
        py::arg("symbols"), py::arg("elem_size"), py::arg("n"), py::arg("n_symbols"),
        py::arg("counts"), nogil());
    m.def(
        "entropy_measure",
        [sizes_dict](ptr_t counts, int n_symbols, int coder) {
          wsq::entropy::Sizes z;
          std::string err;
          {
            py::gil_scoped_release release;
            err = wsq::entropy::measure(P<const int64_t>(counts), n_symbols, coder, &z);
          }
          if (!err.empty()) throw py::value_error(err);
          return sizes_dict(z);
        },
        py::arg("counts"), py::arg("n_symbols"), py::arg("coder"));
    m.def(
        "entropy_plan",
        [](ptr_t counts, int n_symbols, int coder, ptr_t values) {
          int scale_bits = 0, lanes = 0;
          std::string err = wsq::entropy::plan(P<const int64_t>(counts), n_symbols, coder,
                                               P<uint32_t>(values), &scale_bits, &lanes);
          if (!err.empty()) throw py::value_error(err);
          return py::make_tuple(scale_bits, lanes);
        },
        py::arg("counts"), py::arg("n_symbols"), py::arg("coder"), py::arg("values"));
    m.def(
        "entropy_inspect",
        [sizes_dict](ptr_t data, int64_t len) {
          wsq::entropy::Sizes z;
          std::string err = wsq::entropy::inspect(P<const uint8_t>(data), len, &z);
          return py::make_tuple(err, sizes_dict(z));
        },
        py::arg("data"), py::arg("len"));
  }
  // lut family (lut.h): dequantize, fused LUT matmul, row gather; table = 2^bits floats
  m.def(
      "dequant",
      [](ptr_t packed, int64_t nbytes, int64_t n, int bits, ptr_t table, ptr_t out, int out_dtype) {
        wsq::lut_dequant(P<const uint8_t>(packed), nbytes, n, bits, P<const float>(table), P<void>(out),
                         out_dtype);
      },
      py::arg("packed"), py::arg("nbytes"), py::arg("n"), py::arg("bits"), py::arg("table"),
      py::arg("out"), py::arg("out_dtype"), nogil());
  m.def(
      "lut_matmul",
      [](ptr_t x, int64_t M, int64_t K, int64_t ldx, ptr_t packed, int64_t nbytes, int64_t N, int bits,
         ptr_t table, ptr_t bias, ptr_t y, int64_t ldy) {
        wsq::lut_matmul(P<const float>(x), M, K, ldx, P<const uint8_t>(packed), nbytes, N, bits,
                        P<const float>(table), bias ? P<const float>(bias) : nullptr, P<float>(y), ldy);
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("ldx"), py::arg("packed"), py::arg("nbytes"),
      py::arg("N"), py::arg("bits"), py::arg("table"), py::arg("bias"), py::arg("y"), py::arg("ldy"),
      nogil());
  m.def(
      "gather_rows",
      [](ptr_t packed, int64_t nbytes, int64_t num_rows, int64_t row_len, int bits, ptr_t table,
         ptr_t rows, int64_t n_rows, ptr_t out, int out_dtype) {
        return wsq::lut_gather_rows(P<const uint8_t>(packed), nbytes, num_rows, row_len, bits,
                                    P<const float>(table), P<const int64_t>(rows), n_rows, P<void>(out),
                                    out_dtype);
      },
      py::arg("packed"), py::arg("nbytes"), py::arg("num_rows"), py::arg("row_len"), py::arg("bits"),
      py::arg("table"), py::arg("rows"), py::arg("n_rows"), py::arg("out"), py::arg("out_dtype"),
      nogil());
  // @@defs@@ (each kernel family adds its m.def(...) block above this line)
}
