// Instantiates the float32 LUT GEMV kernels for batch tile MT = 8 (see lut_gemv.cuh).
#include "lut_gemv.cuh"

namespace wsq::cuda::gemv {
WSQ_GEMV_INSTANCE(8)
} // namespace wsq::cuda::gemv
