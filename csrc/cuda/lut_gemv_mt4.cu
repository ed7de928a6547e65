// Instantiates the float32 LUT GEMV kernels for batch tile MT = 4 (see lut_gemv.cuh).
#include "lut_gemv.cuh"

namespace wsq::cuda::gemv {
WSQ_GEMV_INSTANCE(4)
} // namespace wsq::cuda::gemv
