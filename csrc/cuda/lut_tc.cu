// Tensor-core LUT matmul (see lut_tc.cuh and lut.cuh, mode 1).
//
// Swap-AB: the mma computes Y^T tiles, 16 rows of W (A, row-major) times 8 rows of x (B). A warp
// owns a 16-row strip of W and all NT * 8 rows of x of its tile, so each decoded weight feeds NT
// mma. K is walked 32 at a time (two k16 mma steps). Lane (g, t) needs W rows g and g + 8 at
// logical k 2t + {0,1} and 2t + 8 + {0,1} of each step; group_hd.h tc_phys_k maps those to the
// physical k 8t .. 8t + 7, so a lane's A values of a row are one group of 8 packed indices (b
// bytes, one aligned load) and its B values one 16-byte load of bf16 x from shared memory.
// x is converted to bf16 once (a pre-pass into the workspace); tables of <= 8 bits are replicated
// per bank in shared memory as float32 and converted to bf16 pairs after the lookup.
// Split-K and the fixed-order reduction of the partial sums are as in lut_matmul.cu.
#include <cuda_bf16.h>

#include <string>
#include <utility>

#include "group_hd.h"
#include "lut_hd.h"
#include "device.cuh"
#include "groups.cuh"
#include "lut_tc.cuh"

namespace wsq::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps; // W rows per block
constexpr int kKC = 256;           // k per staged chunk of x
constexpr int kXRow = kKC + 32;    // bf16 per staged row: 576 bytes = 64 mod 128, conflict-free
constexpr int kTargetBlocks = 256;

struct TCP {
  const __nv_bfloat16 *xb; // [M][K] bf16
  int64_t M, K;
  const uint8_t *w;
  int64_t N;
  int bits, unit;
  const float *table;
  const float *bias;
  float *y;
  int64_t ldy;
  float *part;
  unsigned int *count;
  int S;
  int64_t ksplit, NB, mtiles;
};

struct Split {
  int S;
  int64_t ksplit, nb, mtiles;
};

Split split_for(int64_t M, int64_t K, int64_t N, int nt) {
  Split sp{};
  sp.nb = (N + kRows - 1) / kRows;
  sp.mtiles = (M + 8 * nt - 1) / (8 * nt);
  const int64_t chunks = (K + kKC - 1) / kKC;
  int64_t want = (kTargetBlocks + sp.nb * sp.mtiles - 1) / (sp.nb * sp.mtiles);
  if (want < 1)
    want = 1;
  if (want > chunks)
    want = chunks;
  sp.ksplit = (chunks + want - 1) / want * kKC;
  sp.S = static_cast<int>((K + sp.ksplit - 1) / sp.ksplit);
  return sp;
}

int nt_for(int64_t M) { return M <= 16 ? 2 : M <= 32 ? 4 : 8; }

int64_t align16(int64_t b) { return (b + 15) / 16 * 16; }

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t *a, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__global__ void to_bf16_kernel(const float *x, int64_t M, int64_t K, int64_t ldx,
                               __nv_bfloat16 *xb) {
  for (int64_t i = gtid(); i < M * K; i += gstride())
    xb[i] = __float2bfloat16_rn(x[(i / K) * ldx + i % K]);
}

template <int B, int NT> __global__ void __launch_bounds__(kThreads) tc_kernel(TCP p) {
  extern __shared__ float4 smraw[];
  float *tab = reinterpret_cast<float *>(smraw);                          // [2^B][32]
  __nv_bfloat16 *xs = reinterpret_cast<__nv_bfloat16 *>(tab + (32 << B)); // [NT * 8][kXRow]
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  for (int e = threadIdx.x; e < (32 << B); e += kThreads)
    tab[e] = p.table[e >> 5];

  const int64_t tiles = p.mtiles * p.NB * p.S;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int s = static_cast<int>(tile % p.S);
    const int64_t nb = (tile / p.S) % p.NB;
    const int64_t mt = tile / (p.S * p.NB);
    const int64_t m0 = mt * NT * 8;
    const int64_t kbeg = s * p.ksplit;
    const int64_t kend = kbeg + p.ksplit < p.K ? kbeg + p.ksplit : p.K;
    const int64_t rowA = nb * kRows + warp * 16 + g, rowB = rowA + 8;
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
      acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    for (int64_t kc0 = kbeg; kc0 < kend; kc0 += kKC) {
      __syncthreads(); // previous chunk (or tile) done with xs; the table is written
      for (int i = threadIdx.x; i < NT * 8 * (kKC / 8); i += kThreads) {
        const int r = i / (kKC / 8), c = i % (kKC / 8);
        const int64_t k = kc0 + 8 * c;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (m0 + r < p.M && k < kend)
          v = *reinterpret_cast<const uint4 *>(p.xb + (m0 + r) * p.K + k);
        *reinterpret_cast<uint4 *>(xs + r * kXRow + 8 * c) = v;
      }
      __syncthreads();
      const int steps = static_cast<int>((kend - kc0 < kKC ? kend - kc0 : kKC) / 32);
      for (int st = 0; st < steps; ++st) {
        const int64_t kc = kc0 + 32 * st;
        Group ga{0, 0}, gb{0, 0};
        if (rowA < p.N)
          ga = load_group(p.w, (rowA * p.K + kc) / 8 + t, B, p.unit);
        if (rowB < p.N)
          gb = load_group(p.w, (rowB * p.K + kc) / 8 + t, B, p.unit);
        uint32_t a[2][4];
        tc_a_frags<B>(ga, gb, tab, lane, a);
        uint4 xr[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j)
          xr[j] = *reinterpret_cast<const uint4 *>(xs + (8 * j + g) * kXRow + 32 * st + 8 * t);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          mma_bf16(acc[j], a[0], xr[j].x, xr[j].y); // step 0: x at physical 8t + {0,1}, {2,3}
          mma_bf16(acc[j], a[1], xr[j].z, xr[j].w); // step 1: 8t + {4,5}, {6,7}
        }
      }
    }

    // D tile j: (row g | g + 8 of the strip, column 2t | 2t + 1 of x rows 8j ..).
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int srow, col;
        tc_c_pos(lane, e, &srow, &col);
        const int64_t row = nb * kRows + warp * 16 + srow;
        const int64_t m = m0 + 8 * j + col;
        if (row < p.N && m < p.M) {
          if (p.S == 1)
            p.y[m * p.ldy + row] = acc[j][e] + (p.bias ? p.bias[row] : 0.0f);
          else
            p.part[((mt * p.S + s) * NT * 8 + (m - m0)) * p.N + row] = acc[j][e];
        }
      }
    }
    if (p.S > 1) {
      __threadfence();
      __syncthreads();
      if (threadIdx.x == 0)
        last = atomicAdd(&p.count[mt * p.NB + nb], 1u) == static_cast<unsigned>(p.S - 1);
      __syncthreads();
      if (last) {
        __threadfence();
        for (int i = threadIdx.x; i < kRows * NT * 8; i += kThreads) {
          const int mm = i / kRows;
          const int64_t row = nb * kRows + i % kRows;
          if (row >= p.N || m0 + mm >= p.M)
            continue;
          float v = 0.0f;
          for (int s2 = 0; s2 < p.S; ++s2)
            v += __ldcg(p.part + ((mt * p.S + s2) * NT * 8 + mm) * p.N + row);
          p.y[(m0 + mm) * p.ldy + row] = v + (p.bias ? p.bias[row] : 0.0f);
        }
      }
    }
  }
}

using TcFn = void (*)(TCP);

template <int NT, int... Bs> TcFn pick(int bits, std::integer_sequence<int, Bs...>) {
  constexpr TcFn fns[] = {tc_kernel<Bs + 1, NT>...};
  return fns[bits - 1];
}

} // namespace

bool tc_supported(int64_t M, int64_t K, int64_t N, int bits) {
  return M > 8 && K > 0 && N > 0 && K % 32 == 0 && bits >= 1 && bits <= 8;
}

int64_t tc_workspace_bytes(int64_t M, int64_t K, int64_t N) {
  const int nt = nt_for(M);
  const Split sp = split_for(M, K, N, nt);
  const int64_t part = sp.S > 1 ? sp.mtiles * sp.S * nt * 8 * N : 0;
  return align16(2 * M * K) + align16(4 * part) + align16(4 * sp.mtiles * sp.nb);
}

void tc_matmul(const float *x, int64_t M, int64_t K, int64_t ldx, const uint8_t *packed, int64_t N,
               int bits, const float *table, const float *bias, float *y, int64_t ldy, void *ws,
               cudaStream_t s) {
  const int nt = nt_for(M);
  const Split sp = split_for(M, K, N, nt);
  auto *xb = static_cast<__nv_bfloat16 *>(ws);
  char *base = static_cast<char *>(ws) + align16(2 * M * K);
  auto *part = reinterpret_cast<float *>(base);
  const int64_t part_floats = sp.S > 1 ? sp.mtiles * sp.S * nt * 8 * N : 0;
  auto *count = reinterpret_cast<unsigned int *>(base + align16(4 * part_floats));
  to_bf16_kernel<<<grid_for(M * K, 256, 8), 256, 0, s>>>(x, M, K, ldx, xb);
  check_launch("lut tc to_bf16_kernel launch");
  if (sp.S > 1)
    check_cuda(cudaMemsetAsync(count, 0, 4 * sp.mtiles * sp.nb, s),
               "lut tc cudaMemsetAsync(counters)");
  TCP p{xb,        M,     K,        packed, N,    bits,  group_unit(packed, bits),
        table,     bias,  y,        ldy,    part, count, sp.S,
        sp.ksplit, sp.nb, sp.mtiles};
  const auto seq = std::make_integer_sequence<int, 8>{};
  TcFn fn = nt == 2 ? pick<2>(bits, seq) : nt == 4 ? pick<4>(bits, seq) : pick<8>(bits, seq);
  const int smem = 4 * (32 << bits) + 2 * nt * 8 * kXRow;
  allow_smem(reinterpret_cast<const void *>(fn), smem, "lut tc cudaFuncSetAttribute");
  int per_sm = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, smem),
             "lut tc cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const int grid = grid_for(sp.mtiles * sp.nb * sp.S, 1, per_sm < 1 ? 1 : per_sm);
  fn<<<grid, kThreads, smem, s>>>(p);
  check_launch("lut tc_kernel launch");
}

} // namespace wsq::cuda
