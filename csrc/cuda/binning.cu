// CUDA binning kernels (see binning.cuh). Elements are read 8 at a time with 16-byte loads when
// the pointers allow, through grid-stride loops with 64-bit indices; the bin of every element is
// common.h bin_index (built with --fmad=false, so (w - lo) * scale is never fused and the indices
// equal the CPU's bit for bit).
#include <algorithm>
#include <cmath>
#include <string>

#include "fixsum_hd.h"
#include "binning.cuh"
#include "device.cuh"

namespace wsq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPrivThreads = 128; // private-slot histograms: k * 128 * 16 bytes <= 32 KiB
constexpr int kPrivMaxK = 16;
// Elements one block may add into one (A, B) partial before it must be merged (fixsum_hd.h).
constexpr int64_t kBlockElems = int64_t{1} << 23;

bool is_float(int dt) { return dt == kF32 || dt == kF16 || dt == kBF16; }
bool is_index(int dt) { return dt == kU8 || dt == kU16 || dt == kI32 || dt == kI64; }

// ------------------------------------------------------------------------------------ minmax

// Order-preserving unsigned key of a float: keys compare like the floats, -0.0 below +0.0.
__device__ __forceinline__ uint32_t ord_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Lives in the first 16 of the 24 output bytes until minmax_finish turns it into 3 float64.
struct MinMaxScratch {
  unsigned int kmin, kmax;
  unsigned long long bad;
};

__global__ void minmax_init(MinMaxScratch *s) {
  s->kmin = 0xffffffffu;
  s->kmax = 0u;
  s->bad = 0ull;
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(kThreads)
    minmax_kernel(const void *w, int64_t n, MinMaxScratch *s) {
  uint32_t kmin = 0xffffffffu, kmax = 0u;
  unsigned long long bad = 0;
  auto take = [&](float v) {
    if (isfinite(v)) {
      const uint32_t k = ord_key(v);
      kmin = min(kmin, k);
      kmax = max(kmax, k);
    } else {
      ++bad;
    }
  };
  int64_t start = 0;
  if (VEC) {
    const int64_t groups = n / 8;
    for (int64_t g = gtid(); g < groups; g += gstride()) {
      float v[8];
      ld8_float<DT>(w, g * 8, v);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        take(v[j]);
    }
    start = groups * 8;
  }
  for (int64_t i = start + gtid(); i < n; i += gstride())
    take(ld_float<DT>(w, i));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    kmin = min(kmin, __shfl_xor_sync(0xffffffffu, kmin, o));
    kmax = max(kmax, __shfl_xor_sync(0xffffffffu, kmax, o));
  }
  bad = warp_sum(bad);
  __shared__ uint32_t smin[kThreads / 32], smax[kThreads / 32];
  __shared__ unsigned long long sbad[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    smin[warp] = kmin;
    smax[warp] = kmax;
    sbad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < kThreads / 32; ++i) {
      kmin = min(kmin, smin[i]);
      kmax = max(kmax, smax[i]);
      bad += sbad[i];
    }
    atomicMin(&s->kmin, kmin);
    atomicMax(&s->kmax, kmax);
    if (bad)
      atomicAdd(&s->bad, bad);
  }
}

__global__ void minmax_finish(const MinMaxScratch *s, double *out, int64_t n) {
  const MinMaxScratch v = *s; // read all of it before the same bytes are overwritten
  double lo = 0.0, hi = 0.0;  // the CPU's answer when no element is finite
  if (static_cast<int64_t>(v.bad) < n) {
    lo = key_float(v.kmin);
    hi = key_float(v.kmax);
  }
  out[0] = lo;
  out[1] = hi;
  out[2] = static_cast<double>(v.bad);
}

// --------------------------------------------------------------------------------- histogram

struct HistP {
  const void *w;
  int64_t n;
  float lo, scale, kmax;
  float mul, limit; // fixsum_hd.h parameters
  int bin0, nbins;  // bins [bin0, bin0 + nbins) are counted by this pass
  void *idx;        // raw indices (first pass only)
  unsigned long long *counts;
  unsigned long long *slo; // low words of the 128-bit sums (the `sums` output, reused)
  unsigned long long *shi; // high words (workspace)
  unsigned long long *out; // outliers of bin 0, then of bin k-1: 2 x kOutSlots (workspace)
};

template <int IDT> __device__ __forceinline__ void store_idx8(void *p, int64_t i, const int b[8]) {
  if constexpr (IDT == kU8) {
    unsigned long long v = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v |= static_cast<unsigned long long>(b[j]) << (8 * j);
    *reinterpret_cast<unsigned long long *>(static_cast<uint8_t *>(p) + i) = v;
  } else if constexpr (IDT == kU16) {
    *reinterpret_cast<uint4 *>(static_cast<uint16_t *>(p) + i) = make_uint4(
        b[0] | (b[1] << 16), b[2] | (b[3] << 16), b[4] | (b[5] << 16), b[6] | (b[7] << 16));
  }
}

template <int IDT> __device__ __forceinline__ void store_idx1(void *p, int64_t i, int b) {
  if constexpr (IDT == kU8)
    static_cast<uint8_t *>(p)[i] = static_cast<uint8_t>(b);
  if constexpr (IDT == kU16)
    static_cast<uint16_t *>(p)[i] = static_cast<uint16_t>(b);
}

// Shared-mode pieces are exact for 2^16 elements per bin: fold them every 2^16 block elements
// (chunks of 8 elements per thread, kThreads threads).
constexpr int kFoldChunks = 65536 / (kThreads * 8);

// PRIV: every thread owns a (A, B) partial per bin, updated with plain adds (tiny k would put whole
// warps on one address). Otherwise per bin four 32-bit pieces updated with native shared-memory
// atomics (64-bit and float shared atomics are compare-and-swap loops), folded into per-block
// partials every 2^16 elements. IDT: kU8 / kU16 writes the raw index of every element, 0 none.
// Blocks walk chunks of 8 * blockDim elements in lockstep so the folds can synchronise the block.
template <int DT, bool VEC, bool PRIV, int IDT>
__global__ void __launch_bounds__(kThreads) hist_kernel(HistP p) {
  extern __shared__ unsigned long long hsm[];
  const int T = blockDim.x; // kThreads, or kPrivThreads for PRIV
  const int nb = p.nbins;
  unsigned long long *sA = hsm; // PRIV: [nb][T]; shared: [nb]
  unsigned long long *sB = hsm + nb * (PRIV ? T : 1);
  unsigned int *pc = reinterpret_cast<unsigned int *>(sB + nb); // shared mode: 4 x [nb] pieces
  unsigned int *p0 = pc + nb;
  unsigned int *p1 = p0 + nb;
  unsigned int *p2 = p1 + nb;
  const int words = PRIV ? 4 * nb * T : 8 * nb; // in 32-bit words
  for (int i = threadIdx.x; i < words; i += T)
    reinterpret_cast<unsigned int *>(hsm)[i] = 0u;
  __syncthreads();

  auto add = [&](float v) -> int {
    const int b = bin_index(v, p.lo, p.scale, p.kmax);
    const int r = b - p.bin0;
    if (static_cast<unsigned>(r) < static_cast<unsigned>(nb)) {
      int64_t x = 0;
      if (fixsum_ok(v, p.limit)) {
        x = fixsum_value(v, p.mul);
      } else { // NaN, Inf or a clamped outlier (end bins only): integer, order-free
        uint64_t a;
        const int slot = fixsum_out_slot(v, &a);
        atomicAdd(&p.out[(b == 0 ? 0 : kOutSlots) + slot], static_cast<unsigned long long>(a));
      }
      if (PRIV) {
        sA[r * T + threadIdx.x] += fixsum_a(x);
        sB[r * T + threadIdx.x] += fixsum_b(x);
      } else {
        atomicAdd(&pc[r], 1u);
        atomicAdd(&p0[r], fixsum_p0(x));
        atomicAdd(&p1[r], fixsum_p1(x));
        atomicAdd(&p2[r], fixsum_p2(x));
      }
    }
    return b;
  };
  auto fold = [&] {
    __syncthreads();
    for (int r = threadIdx.x; r < nb; r += T) {
      if (pc[r] == 0u)
        continue;
      uint64_t a = sA[r], hb = sB[r];
      fixsum_fold(pc[r], p0[r], p1[r], p2[r], &a, &hb);
      sA[r] = a;
      sB[r] = hb;
      pc[r] = p0[r] = p1[r] = p2[r] = 0u;
    }
    __syncthreads();
  };

  const int chunk = 8 * T; // every thread takes 8 consecutive elements (one or two 16-byte loads)
  const int64_t chunks = (p.n + chunk - 1) / chunk;
  int since_fold = 0;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int64_t base = c * chunk;
    if (VEC && base + chunk <= p.n) {
      const int64_t i = base + 8 * threadIdx.x;
      float v[8];
      int b[8];
      ld8_float<DT>(p.w, i, v);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        b[j] = add(v[j]);
      if (IDT != 0)
        store_idx8<IDT>(p.idx, i, b);
    } else { // a misaligned input, or the last chunk: coalesced scalar accesses
#pragma unroll 4
      for (int j = 0; j < 8; ++j) {
        const int64_t i = base + j * T + threadIdx.x;
        if (i < p.n) {
          const int b = add(ld_float<DT>(p.w, i));
          if (IDT != 0)
            store_idx1<IDT>(p.idx, i, b);
        }
      }
    }
    if (!PRIV && ++since_fold == kFoldChunks) {
      fold();
      since_fold = 0;
    }
  }
  if (!PRIV)
    fold();
  __syncthreads();

  // Merge this block's partials into the global 128-bit totals: one set of atomics per bin.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = T >> 5;
  for (int r = PRIV ? warp : threadIdx.x; r < nb; r += PRIV ? nwarps : T) {
    unsigned long long a = 0ull, hb = 0ull;
    if (PRIV) {
      for (int t = lane; t < T; t += 32) { // integers: the order cannot change the result
        a += sA[r * T + t];
        hb += sB[r * T + t];
      }
      a = warp_sum(a);
      hb = warp_sum(hb);
      if (lane != 0)
        continue;
    } else {
      a = sA[r];
      hb = sB[r];
    }
    if (a == 0ull)
      continue;
    const int j = p.bin0 + r;
    atomicAdd(&p.counts[j], static_cast<unsigned long long>(fixsum_count(a)));
    uint64_t hi, lo;
    fixsum_partial(a, hb, &hi, &lo);
    const unsigned long long old = atomicAdd(&p.slo[j], static_cast<unsigned long long>(lo));
    hi += (old + lo < old) ? 1u : 0u; // carry out of the low word
    if (hi)
      atomicAdd(&p.shi[j], static_cast<unsigned long long>(hi));
  }
}

__global__ void hist_finish(int k, int shift, const unsigned long long *shi,
                            const unsigned long long *out, double *sums) {
  for (int64_t j = gtid(); j < k; j += gstride()) {
    const uint64_t lo = reinterpret_cast<const unsigned long long *>(sums)[j];
    double o = 0.0;
    if (j == 0)
      o = fixsum_out_total(reinterpret_cast<const uint64_t *>(out));
    else if (j == k - 1)
      o = fixsum_out_total(reinterpret_cast<const uint64_t *>(out) + kOutSlots);
    sums[j] = fixsum_to_double(shi[j], lo, shift) + o;
  }
}

// -------------------------------------------------------------------------------- fake quant

// out[i] = values[bin(w[i])] with the k values pre-converted to out's bits in shared memory (or,
// past the shared-memory budget, read from global and converted per element).
template <int DTI, int DTO, bool VEC>
__global__ void __launch_bounds__(kThreads)
    fq_kernel(const void *w, int64_t n, float lo, float scale, float kmax, int k,
              const float *values, void *out, bool smem) {
  extern __shared__ uint32_t tab[];
  if (smem) {
    for (int j = threadIdx.x; j < k; j += blockDim.x)
      tab[j] = float_bits(values[j], DTO);
    __syncthreads();
  }
  auto look = [&](float v) -> uint32_t {
    const int b = bin_index(v, lo, scale, kmax);
    return smem ? tab[b] : float_bits(__ldg(values + b), DTO);
  };
  int64_t start = 0;
  if (VEC) {
    const int64_t groups = n / 8;
    for (int64_t g = gtid(); g < groups; g += gstride()) {
      float v[8];
      uint32_t o[8];
      ld8_float<DTI>(w, g * 8, v); // all 8 read before any write: out may alias w
#pragma unroll
      for (int j = 0; j < 8; ++j)
        o[j] = look(v[j]);
      st8_bits<DTO>(out, g * 8, o);
    }
    start = groups * 8;
  }
  for (int64_t i = start + gtid(); i < n; i += gstride())
    st1_bits<DTO>(out, i, look(ld_float<DTI>(w, i)));
}

// ---------------------------------------------------------------------------------- relabel

template <int DTI, int DTO>
__global__ void __launch_bounds__(kThreads)
    relabel_kernel(const void *idx, int64_t n, const int32_t *table, int64_t tn, void *out) {
  using TI = typename IndexType<DTI>::T;
  using TO = typename IndexType<DTO>::T;
  const TI *in = static_cast<const TI *>(idx);
  TO *o = static_cast<TO *>(out);
  for (int64_t i = gtid(); i < n; i += gstride()) {
    const int64_t v = static_cast<int64_t>(in[i]);
    o[i] = (v >= 0 && v < tn) ? static_cast<TO>(__ldg(table + v)) : TO(0);
  }
}

void check_range(float lo, float scale) {
  check(std::isfinite(lo) && std::isfinite(scale) && scale >= 0.0f,
        "lo must be finite and scale finite and >= 0");
}

} // namespace

void minmax(const void *w, int64_t n, int w_dtype, double *out, std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_float(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check(out != nullptr && (n == 0 || w != nullptr), "minmax: null pointer");
  cudaStream_t s = as_stream(stream);
  auto *scratch = reinterpret_cast<MinMaxScratch *>(out);
  minmax_init<<<1, 1, 0, s>>>(scratch);
  check_launch("minmax_init launch");
  if (n > 0) {
    const bool vec = aligned(w, 16);
    const int grid = grid_for(vec ? (n + 7) / 8 : n, kThreads, 4);
    WSQ_FLOAT_SWITCH(w_dtype, DT, [&] {
      WSQ_BOOL_SWITCH(vec, VEC,
                      [&] { minmax_kernel<DT, VEC><<<grid, kThreads, 0, s>>>(w, n, scratch); });
    });
    check_launch("minmax_kernel launch");
  }
  minmax_finish<<<1, 1, 0, s>>>(scratch, out, n);
  check_launch("minmax_finish launch");
}

// High words of the k 128-bit sums, then the two end bins' outlier slots (fixsum_hd.h).
int64_t histogram_workspace_bytes(int k) {
  return 8 * (static_cast<int64_t>(k < 1 ? 1 : k) + 2 * kOutSlots);
}

void histogram(const void *w, int64_t n, int w_dtype, int k, float lo, float scale, int64_t *counts,
               double *sums, void *idx, int idx_dtype, void *ws, std::uintptr_t stream) {
  check(n >= 0 && n < kOutMaxElems, "n must be in 0..2^39-1, got " + std::to_string(n));
  check(is_float(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check(k >= 1 && k <= 65536, "k must be in 1..65536, got " + std::to_string(k));
  check_range(lo, scale);
  check(counts != nullptr && sums != nullptr && ws != nullptr,
        "counts, sums and ws must not be null");
  check(n == 0 || w != nullptr, "w must not be null");
  if (idx != nullptr)
    check((idx_dtype == kU8 && k <= 256) || idx_dtype == kU16,
          "idx_dtype must be uint8 (k <= 256) or uint16, got code " + std::to_string(idx_dtype) +
              " for k=" + std::to_string(k));
  cudaStream_t s = as_stream(stream);
  auto *shi = static_cast<unsigned long long *>(ws);
  auto *out = shi + k;
  check_cuda(cudaMemsetAsync(counts, 0, sizeof(int64_t) * k, s),
             "histogram cudaMemsetAsync(counts)");
  check_cuda(cudaMemsetAsync(sums, 0, sizeof(double) * k, s), "histogram cudaMemsetAsync(sums)");
  check_cuda(cudaMemsetAsync(ws, 0, histogram_workspace_bytes(k), s),
             "histogram cudaMemsetAsync(ws)");
  const FixSum fx = fixsum_params(lo, scale, k);
  if (n > 0) {
    const DeviceInfo &dev = device_info();
    const bool priv = k <= kPrivMaxK;
    const int threads = priv ? kPrivThreads : kThreads;
    // Bins per pass: all of them when they fit one block's shared memory (32 bytes each).
    const int cap = priv ? k : static_cast<int>(((dev.smem_optin - 1024) / 32) & ~255);
    check(cap >= 256, "histogram: too little shared memory on this device");
    const bool vec = aligned(w, 16) && (idx == nullptr || aligned(idx, 16));
    HistP p{w,
            n,
            lo,
            scale,
            static_cast<float>(k - 1),
            fx.mul,
            fx.limit,
            0,
            0,
            idx,
            reinterpret_cast<unsigned long long *>(counts),
            reinterpret_cast<unsigned long long *>(sums),
            shi,
            out};
    for (int bin0 = 0; bin0 < k; bin0 += cap) {
      p.bin0 = bin0;
      p.nbins = k - bin0 < cap ? k - bin0 : cap;
      const int smem = priv ? 16 * p.nbins * threads : 32 * p.nbins;
      const int per_sm = std::max(1, std::min(8, dev.smem_per_sm / std::max(smem + 1024, 1)));
      int grid = grid_for((n + 8 * threads - 1) / (8 * threads), 1, per_sm * 2);
      const int64_t need = (n + kBlockElems - 1) / kBlockElems; // keeps partials exact
      if (grid < need)
        grid = static_cast<int>(need);
      const int idt = (idx != nullptr && bin0 == 0) ? idx_dtype : 0;
      WSQ_FLOAT_SWITCH(w_dtype, DT, [&] {
        WSQ_BOOL_SWITCH(vec, VEC, [&] {
          WSQ_BOOL_SWITCH(priv, PRIV, [&] {
            auto launch = [&](auto kernel) {
              allow_smem(reinterpret_cast<const void *>(kernel), smem,
                         "histogram cudaFuncSetAttribute");
              kernel<<<grid, threads, smem, s>>>(p);
            };
            if (idt == kU8)
              launch(hist_kernel<DT, VEC, PRIV, kU8>);
            else if (idt == kU16)
              launch(hist_kernel<DT, VEC, PRIV, kU16>);
            else
              launch(hist_kernel<DT, VEC, PRIV, 0>);
          });
        });
      });
      check_launch("hist_kernel launch");
    }
  }
  hist_finish<<<grid_for(k, kThreads, 2), kThreads, 0, s>>>(k, fx.shift, shi, out, sums);
  check_launch("hist_finish launch");
}

void relabel(const void *idx, int64_t n, int in_dtype, const int32_t *table, int64_t table_len,
             void *out, int out_dtype, std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_index(in_dtype),
        "in_dtype must be an index dtype, got code " + std::to_string(in_dtype));
  check(is_index(out_dtype),
        "out_dtype must be an index dtype, got code " + std::to_string(out_dtype));
  check(table_len >= 0, "table_len must be >= 0");
  if (n == 0)
    return;
  check(idx != nullptr && out != nullptr && (table != nullptr || table_len == 0),
        "relabel: null pointer");
  cudaStream_t s = as_stream(stream);
  const int grid = grid_for(n, kThreads, 8);
  WSQ_INDEX_SWITCH(in_dtype, DI, [&] {
    WSQ_INDEX_SWITCH(out_dtype, DO, [&] {
      relabel_kernel<DI, DO><<<grid, kThreads, 0, s>>>(idx, n, table, table_len, out);
    });
  });
  check_launch("relabel_kernel launch");
}

void fake_quant(const void *w, int64_t n, int w_dtype, int k, float lo, float scale,
                const float *values, void *out, int out_dtype, std::uintptr_t stream) {
  check(n >= 0, "n must be >= 0, got " + std::to_string(n));
  check(is_float(w_dtype),
        "w_dtype must be float32/float16/bfloat16, got code " + std::to_string(w_dtype));
  check(is_float(out_dtype),
        "out_dtype must be float32/float16/bfloat16, got code " + std::to_string(out_dtype));
  check(k >= 1 && k <= 65536, "k must be in 1..65536, got " + std::to_string(k));
  check_range(lo, scale);
  check(values != nullptr, "values must not be null");
  if (n == 0)
    return;
  check(w != nullptr && out != nullptr, "fake_quant: null pointer");
  cudaStream_t s = as_stream(stream);
  const bool smem = k <= 12288; // 48 KiB of converted values: no opt-in needed
  const int sbytes = smem ? 4 * k : 0;
  const bool vec = aligned(w, 16) && aligned(out, 16);
  const int grid = grid_for(vec ? (n + 7) / 8 : n, kThreads, 4);
  const float kmax = static_cast<float>(k - 1);
  WSQ_FLOAT_SWITCH(w_dtype, DI, [&] {
    WSQ_FLOAT_SWITCH(out_dtype, DO, [&] {
      WSQ_BOOL_SWITCH(vec, VEC, [&] {
        fq_kernel<DI, DO, VEC>
            <<<grid, kThreads, sbytes, s>>>(w, n, lo, scale, kmax, k, values, out, smem);
      });
    });
  });
  check_launch("fq_kernel launch");
}

} // namespace wsq::cuda
