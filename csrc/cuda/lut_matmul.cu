// CUDA LUT matmul y = x @ W^T (+ bias), W = table[packed indices] (see lut.cuh), float32 FMA path.
//
// Work split. A block (8 warps) owns a tile: RB = 8 * R rows of W, one K-slice of 1024, and up to
// MT (1, 2, 4 or 8) rows of x. Each warp owns R rows; each lane owns 32 consecutive k of the slice.
// For every weight it decodes (one shift or funnel shift of the lane's words) and looks up (shared
// memory) once, the lane does MT FMAs, so the decode and lookup are amortised over the batch, and
// each x value (4 at a time from padded shared memory) serves R rows. The lane's partial dot
// products are summed across the warp by shuffles in a fixed tree. K-slices are split-K: their
// partial sums go to a workspace and the last block to finish a row block adds them in slice order
// (plus the bias), so the result does not depend on scheduling and repeats bit for bit.
// The partials of all of x would need M * N * ceil(K / 1024) floats (~721 MB at 4096 x 11008 x
// 4096), so large batches run as several launches over whole batch tiles (chunks of rows of x), each
// reusing one workspace of at most kPartCapBytes (or one tile's partials, if larger): every output
// element is still computed by the same tile with the same slice order, so chunking cannot change a
// bit of it.
//
// Fast path (K % 32 == 0, stream 16-byte aligned): a lane's 32 indices are B whole 32-bit words,
// loaded with 16/8/4-byte loads before any arithmetic (R * B words in flight per lane). Tables of
// b <= 8 bits are replicated 32 times in shared memory, one copy per bank, so lookups never
// conflict; 9..13 bits use one shared copy; wider tables are read through the read-only cache.
// The generic path (any K, any alignment) reads each index with common.h read_packed.
#include <algorithm>
#include <string>
#include <utility>

#include "device.cuh"
#include "lut.cuh"
#include "lut_gemv.cuh"
#include "lut_tc.cuh"

namespace wsq::cuda {
namespace {

using namespace gemv;

// K == 0: y = bias (or 0).
__global__ void fill_bias_kernel(float *y, int64_t M, int64_t N, int64_t ldy, const float *bias) {
  for (int64_t i = gtid(); i < M * N; i += gstride())
    y[(i / N) * ldy + i % N] = bias ? bias[i % N] : 0.0f;
}

int mt_for(int64_t M) { return M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8; }

constexpr int64_t kPartCapBytes = int64_t{64} << 20; // split-K partials per launch

struct Plan {
  bool fast;
  int mt, rb, smem, S;
  int64_t nb, mtiles;
  int64_t chunk_mtiles; // batch tiles per launch (all of them unless the partials would be too big)
  int64_t part_floats;  // partials of one launch
};

Plan plan_for(int64_t M, int64_t K, int64_t N, int bits, bool fast) {
  Plan p{};
  p.fast = fast;
  p.mt = mt_for(M);
  p.rb = (fast ? gemv_rows_per_warp(bits, p.mt) : kGenericRows) * kWarps;
  p.smem = static_cast<int>(sizeof(float)) * (p.mt * kXS + (fast ? gemv_table_floats(bits) : 0));
  p.S = static_cast<int>((K + kKS - 1) / kKS);
  if (p.S < 1)
    p.S = 1;
  p.nb = (N + p.rb - 1) / p.rb;
  p.mtiles = (M + p.mt - 1) / p.mt;
  p.chunk_mtiles = p.mtiles;
  if (p.S > 1) {
    const int64_t per_tile = 4 * static_cast<int64_t>(p.S) * p.mt * N; // bytes of one tile
    p.chunk_mtiles = std::max<int64_t>(1, std::min(p.mtiles, kPartCapBytes / per_tile));
  }
  p.part_floats = p.S > 1 ? p.chunk_mtiles * p.S * p.mt * N : 0;
  return p;
}

int64_t align16(int64_t b) { return (b + 15) / 16 * 16; }

} // namespace

int64_t lut_matmul_workspace_bytes(int64_t M, int64_t K, int64_t N, int bits, int mode) {
  if (M <= 0 || N <= 0 || K <= 0)
    return 16;
  int64_t fma = 0;
  {
    const Plan p = plan_for(M, K, N, bits, K % 32 == 0); // the larger of fast / generic needs
    const Plan g = plan_for(M, K, N, bits, false);
    fma = std::max(align16(4 * p.part_floats) + align16(4 * p.chunk_mtiles * p.nb),
                   align16(4 * g.part_floats) + align16(4 * g.chunk_mtiles * g.nb));
  }
  if (mode == 1)
    fma = std::max(fma, tc_workspace_bytes(M, K, N));
  return std::max<int64_t>(fma, 16);
}

void lut_matmul(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed,
                int64_t nbytes, int64_t N, int bits, const float *table, const float *bias,
                float *y, int64_t ldy, void *ws, int64_t ws_bytes, int mode,
                std::uintptr_t stream) {
  check(M >= 0 && K >= 0 && N >= 0, "M, K and N must be >= 0");
  check(bits >= 1 && bits <= 16, "bits must be in 1..16, got " + std::to_string(bits));
  check(mode == 0 || mode == 1,
        "mode must be 0 (exact) or 1 (tensor cores), got " + std::to_string(mode));
  check(ldx >= K && ldy >= N, "ldx must be >= K and ldy >= N");
  check(nbytes >= packed_bytes(N * K, bits),
        "packed holds " + std::to_string(nbytes) + " bytes; a " + std::to_string(N) + " x " +
            std::to_string(K) + " matrix needs " + std::to_string(packed_bytes(N * K, bits)));
  check(ws_bytes >= lut_matmul_workspace_bytes(M, K, N, bits, mode),
        "ws is smaller than lut_matmul_workspace_bytes");
  if (M == 0 || N == 0)
    return;
  check(y != nullptr && table != nullptr && ws != nullptr, "lut_matmul: null pointer");
  cudaStream_t s = as_stream(stream);
  if (K == 0) {
    fill_bias_kernel<<<grid_for(M * N, 256, 4), 256, 0, s>>>(y, M, N, ldy, bias);
    check_launch("fill_bias_kernel launch");
    return;
  }
  check(x != nullptr && packed != nullptr, "lut_matmul: null x or packed");
  const bool fast = K % 32 == 0 && aligned(packed, 16);
  if (mode == 1 && fast && tc_supported(M, K, N, bits)) {
    tc_matmul(x, M, K, ldx, packed, N, bits, table, bias, y, ldy, ws, s);
    return;
  }
  const Plan pl = plan_for(M, K, N, bits, fast);
  auto *part = static_cast<float *>(ws);
  auto *count =
      reinterpret_cast<unsigned int *>(static_cast<char *>(ws) + align16(4 * pl.part_floats));
  GemvFn fn = nullptr;
  switch (pl.mt) {
  case 1:
    fn = fast ? fast_kernel_mt1(bits) : generic_kernel_mt1();
    break;
  case 2:
    fn = fast ? fast_kernel_mt2(bits) : generic_kernel_mt2();
    break;
  case 4:
    fn = fast ? fast_kernel_mt4(bits) : generic_kernel_mt4();
    break;
  default:
    fn = fast ? fast_kernel_mt8(bits) : generic_kernel_mt8();
    break;
  }
  allow_smem(reinterpret_cast<const void *>(fn), pl.smem, "lut_matmul cudaFuncSetAttribute");
  int per_sm = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, pl.smem),
             "lut_matmul cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  // Launches in stream order reuse the workspace safely; chunks start on a batch-tile boundary.
  const int64_t rows = pl.chunk_mtiles * pl.mt;
  for (int64_t m0 = 0; m0 < M; m0 += rows) {
    const int64_t mc = std::min(rows, M - m0);
    const int64_t mtiles = (mc + pl.mt - 1) / pl.mt;
    if (pl.S > 1)
      check_cuda(cudaMemsetAsync(count, 0, 4 * mtiles * pl.nb, s),
                 "lut_matmul cudaMemsetAsync(counters)");
    MM p{x + m0 * ldx, mc,   K,     ldx,  packed, nbytes, N,     bits,  table,
         bias,         y + m0 * ldy, ldy, part, count,  pl.S,   pl.nb, mtiles};
    const int64_t tiles = mtiles * pl.nb * pl.S;
    const int grid = grid_for(tiles, 1, per_sm < 1 ? 1 : per_sm);
    fn<<<grid, kThreads, pl.smem, s>>>(p);
    check_launch("lut gemv_kernel launch");
  }
}

} // namespace wsq::cuda
