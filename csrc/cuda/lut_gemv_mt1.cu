// Instantiates the float32 LUT GEMV kernels for batch tile MT = 1 (see lut_gemv.cuh).
#include "lut_gemv.cuh"

namespace wsq::cuda::gemv {
WSQ_GEMV_INSTANCE(1)
} // namespace wsq::cuda::gemv
