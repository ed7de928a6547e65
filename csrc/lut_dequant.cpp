// Dequantize and row gather (Embedding lookup): argument checks, ISA choice and the scalar path.
// The SIMD paths are in lut_avx2.cpp / lut_avx512.cpp; all paths write identical values.
#include <limits>

#include "lut_impl.h"

namespace wsq {
namespace lut_detail {

Isa lut_isa() {
  Isa isa = active_isa();
#if defined(__x86_64__) || defined(__i386__)
  // The AVX-512 LUT kernels need VBMI (vpermb / vpermi2b / vpmultishiftqb) on top of F/BW/VL.
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (isa == Isa::kAvx512 && !vbmi) isa = Isa::kAvx2;
#else
  isa = Isa::kScalar;
#endif
  return isa;
}

void dequant_scalar(const Packed& w, int64_t n, void* out, int dt) {
  for_chunks(n, 16384, [&](int64_t e0, int64_t cnt) {
    for (int64_t e = e0; e < e0 + cnt; ++e) store_float(out, e, w.table[index_at(w, e)], dt);
  });
}

int64_t gather_scalar(const Packed& w, int64_t num_rows, int64_t row_len, const int64_t* rows,
                      int64_t n_rows, void* out, int dt) {
  return gather_driver(num_rows, row_len, rows, n_rows, out, dt, [&](int64_t e0, int64_t cnt, int64_t off) {
    for (int64_t j = 0; j < cnt; ++j) store_float(out, off + j, w.table[index_at(w, e0 + j)], dt);
  });
}

}  // namespace lut_detail

using lut_detail::Packed;

static void check_common(const char* fn, int64_t n, int bits, int64_t nbytes, const float* table) {
  check(bits >= 1 && bits <= 16, std::string(fn) + ": bits must be in 1..16, got " + std::to_string(bits));
  check(n >= 0, std::string(fn) + ": element count must be >= 0");
  check(n <= (std::numeric_limits<int64_t>::max() - 7) / 16, std::string(fn) + ": element count too large");
  check(nbytes >= packed_bytes(n, bits),
        std::string(fn) + ": packed holds " + std::to_string(nbytes) + " bytes; " + std::to_string(n) +
            " indices at " + std::to_string(bits) + " bits need " + std::to_string(packed_bytes(n, bits)));
  check(table != nullptr, std::string(fn) + ": table is null");
}

static void check_float_dtype(const char* fn, int dt) {
  check(dt == kF32 || dt == kF16 || dt == kBF16,
        std::string(fn) + ": out_dtype must be float32, float16 or bfloat16 (code " + std::to_string(dt) + ")");
}

void lut_dequant(const uint8_t* packed, int64_t nbytes, int64_t n, int bits, const float* table,
                 void* out, int out_dtype) {
  check_common("dequant", n, bits, nbytes, table);
  check_float_dtype("dequant", out_dtype);
  if (n == 0) return;
  const Packed w{packed, nbytes, bits, table};
  switch (lut_detail::lut_isa()) {
    case Isa::kAvx512: lut_detail::dequant_avx512(w, n, out, out_dtype); break;
    case Isa::kAvx2: lut_detail::dequant_avx2(w, n, out, out_dtype); break;
    default: lut_detail::dequant_scalar(w, n, out, out_dtype); break;
  }
}

int64_t lut_gather_rows(const uint8_t* packed, int64_t nbytes, int64_t num_rows, int64_t row_len,
                        int bits, const float* table, const int64_t* rows, int64_t n_rows, void* out,
                        int out_dtype) {
  check(num_rows >= 0 && row_len >= 0 && n_rows >= 0, "gather_rows: sizes must be >= 0");
  check(row_len == 0 || num_rows <= std::numeric_limits<int64_t>::max() / 16 / row_len,
        "gather_rows: num_rows * row_len too large");
  check_common("gather_rows", num_rows * row_len, bits, nbytes, table);
  check_float_dtype("gather_rows", out_dtype);
  if (n_rows == 0) return 0;
  if (row_len == 0) {  // nothing to write, but bad ids are still bad
    int64_t bad = 0;
    for (int64_t i = 0; i < n_rows; ++i) bad += rows[i] < 0 || rows[i] >= num_rows;
    return bad;
  }
  const Packed w{packed, nbytes, bits, table};
  switch (lut_detail::lut_isa()) {
    case Isa::kAvx512: return lut_detail::gather_avx512(w, num_rows, row_len, rows, n_rows, out, out_dtype);
    case Isa::kAvx2: return lut_detail::gather_avx2(w, num_rows, row_len, rows, n_rows, out, out_dtype);
    default: return lut_detail::gather_scalar(w, num_rows, row_len, rows, n_rows, out, out_dtype);
  }
}

}  // namespace wsq
