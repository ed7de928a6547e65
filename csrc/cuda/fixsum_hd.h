// Exact, order-independent bin sums in fixed point (host and device alike).
//
// Why: GPU histograms add from thousands of threads in no fixed order; float64 atomics would make
// the sums (and so the codebook) differ in their last bits from run to run, and float atomics on
// shared memory are compare-and-swap loops anyway. Here every member w of a bin becomes the integer
// x = round(w * 2^shift) with |x| < 2^47, and integers add associatively, so the sums are bitwise
// identical whatever the order, and exact except for members below 2^-23 of the range, which are
// rounded by at most 2^-48 * max|w| each (about what float64 summation of a million members loses).
//
// The range bound comes from (lo, scale, k): every member of the range [lo, lo + k/scale] has
// |w| < 2^47 / 2^shift = `limit`. Only the end bins can receive values outside the range (clamped
// outliers when the caller chose lo/hi inside the data), and NaN/Inf go to bin 0 or k-1; those fail
// the `fixsum_ok` test and go to the outlier accumulator below, integer too, so that clamping
// cannot make the sums depend on the order the blocks finish in (float64 atomics did).
//
// Accumulators, from the innermost out:
// - pieces: four 32-bit words per bin (count, sum of bits 0..15 of x, sum of bits 16..31, signed
//   sum of x >> 32), added with native 32-bit shared-memory atomics; exact for up to 2^16 elements;
// - a partial: two 64-bit words, A = count << 40 | sum of the low 16 bits of each x, and
//   B = sum of x >> 16; exact for up to 2^24 - 1 elements (low sums < 2^40, |B| < 2^55);
// - the total: a signed 128-bit integer (hi, lo) per bin, converted to float64 once.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common.h"

namespace wsq {

constexpr int kFixBits = 47;                      // |x| < 2^47
constexpr int64_t kFixMaxPartial = (1 << 24) - 1; // elements per (A, B) partial
constexpr uint64_t kFixLowMask = (uint64_t{1} << 40) - 1;

struct FixSum {
  int shift;   // x = round(w * 2^shift)
  float mul;   // 2^shift (a normal float32)
  float limit; // 2^(47 - shift), +inf when beyond float32: |w| < limit  <=>  x fits
};

// Host side: the fixed-point scale for a histogram over (lo, scale, k).
inline FixSum fixsum_params(float lo, float scale, int k) {
  double m = std::fabs(static_cast<double>(lo));
  if (scale > 0.0f)
    m = std::fmax(m, std::fabs(static_cast<double>(lo) + k / static_cast<double>(scale)));
  int e = 0;
  std::frexp(m, &e); // m < 2^e (e is 0 for m == 0)
  // One spare bit: float32 rounding of scale can put the true maximum slightly past lo + k/scale.
  int shift = kFixBits - (e + 1);
  if (shift > 127)
    shift = 127; // tiny ranges: keep 2^shift a normal float
  if (shift < -126)
    shift = -126;
  return FixSum{shift, std::ldexp(1.0f, shift), std::ldexp(1.0f, kFixBits - shift)};
}

// False for NaN, +-Inf and values outside the fixed-point range.
WSQ_HD bool fixsum_ok(float w, float limit) { return fabsf(w) < limit; }

WSQ_HD int64_t fixsum_value(float w, float mul) {
#if defined(__CUDA_ARCH__)
  return __float2ll_rn(w * mul); // w * 2^shift is exact (a power of two); round half to even
#else
  return llrintf(w * mul); // default rounding mode: half to even, as on the device
#endif
}

// The (A, B) contribution of one element with fixed-point value x.
WSQ_HD uint64_t fixsum_a(int64_t x) {
  return (uint64_t{1} << 40) | (static_cast<uint64_t>(x) & 0xffffu);
}
WSQ_HD uint64_t fixsum_b(int64_t x) { return static_cast<uint64_t>(x >> 16); } // arithmetic shift

WSQ_HD int64_t fixsum_count(uint64_t a) { return static_cast<int64_t>(a >> 40); }

// The four 32-bit pieces of x (the innermost accumulators add each with a 32-bit integer add).
WSQ_HD uint32_t fixsum_p0(int64_t x) { return static_cast<uint32_t>(x) & 0xffffu; }
WSQ_HD uint32_t fixsum_p1(int64_t x) { return static_cast<uint32_t>(x >> 16) & 0xffffu; }
WSQ_HD uint32_t fixsum_p2(int64_t x) {
  return static_cast<uint32_t>(static_cast<int32_t>(x >> 32));
}

// Adds summed pieces (count c, s0 = sum of p0, s1 = sum of p1, s2 = sum of p2 as a wrapped int32)
// of at most 2^16 elements to a partial (A, B).
WSQ_HD void fixsum_fold(uint32_t c, uint32_t s0, uint32_t s1, uint32_t s2, uint64_t *a,
                        uint64_t *b) {
  *a += (static_cast<uint64_t>(c) << 40) + s0;
  *b += static_cast<uint64_t>(s1) +
        (static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(s2))) << 16);
}

// The signed 128-bit value (hi, lo) = B * 2^16 + (A & (2^40 - 1)) of one partial.
WSQ_HD void fixsum_partial(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo) {
  const int64_t bs = static_cast<int64_t>(b);
  uint64_t l = b << 16;
  uint64_t h = static_cast<uint64_t>(bs >> 48); // sign-extended top of B * 2^16
  const uint64_t add = a & kFixLowMask;
  const uint64_t s = l + add;
  h += (s < l) ? 1u : 0u;
  *lo = s;
  *hi = h;
}

// Adds the 128-bit (hi, lo) into the running total (*th, *tl) (host / single-threaded use; the
// kernels do the same with atomics: carry out of the low word = (old + lo) < old).
WSQ_HD void add128(uint64_t *th, uint64_t *tl, uint64_t hi, uint64_t lo) {
  const uint64_t s = *tl + lo;
  *th += hi + ((s < lo) ? 1u : 0u);
  *tl = s;
}

// ----- Outliers: |w| >= limit (or NaN/Inf), only ever in bin 0 or bin k-1.
// A finite float32 is exactly m * 2^(max(E, 1) - 150) with its 8-bit exponent field E and its
// integer significand m < 2^24, so per end bin one signed 64-bit sum of m per E (exact for < 2^39
// elements) plus counts of NaN, +Inf and -Inf hold the outliers exactly, whatever the order they are
// added in. `fixsum_out_total` turns them into one float64 in a fixed order (ascending E): repeatable
// bit for bit, within about 2^-45 of the exact sum relative to the sum of magnitudes.
constexpr int kOutExp = 256;            // slots 0..255: sum of signed m for that exponent field
constexpr int kOutNaN = kOutExp;        // count of NaN
constexpr int kOutPosInf = kOutExp + 1; // count of +Inf
constexpr int kOutNegInf = kOutExp + 2; // count of -Inf
constexpr int kOutSlots = kOutExp + 3;  // 64-bit words per end bin
constexpr int64_t kOutMaxElems = int64_t{1} << 39;

// The slot of one outlier w and the 64-bit (two's complement) word to add there.
WSQ_HD int fixsum_out_slot(float w, uint64_t *add) {
  uint32_t u;
  memcpy(&u, &w, 4);
  const uint32_t e = (u >> 23) & 0xffu, frac = u & 0x7fffffu;
  *add = 1u;
  if (e == 0xffu)
    return frac ? kOutNaN : ((u >> 31) ? kOutNegInf : kOutPosInf);
  const int64_t m = static_cast<int64_t>(frac | (e ? 0x800000u : 0u));
  *add = static_cast<uint64_t>((u >> 31) ? -m : m);
  return static_cast<int>(e);
}

// The float64 value of one end bin's kOutSlots words (NaN and Inf as float64 addition gives them).
WSQ_HD double fixsum_out_total(const uint64_t *slot) {
  if (slot[kOutNaN] != 0u || (slot[kOutPosInf] != 0u && slot[kOutNegInf] != 0u))
    return NAN;
  if (slot[kOutPosInf] != 0u)
    return INFINITY;
  if (slot[kOutNegInf] != 0u)
    return -INFINITY;
  double t = 0.0;
  for (int e = 0; e < kOutExp; ++e) // fixed order: the result is the same on every run
    if (slot[e] != 0u)
      t += ldexp(static_cast<double>(static_cast<int64_t>(slot[e])), (e ? e : 1) - 150);
  return t;
}

WSQ_HD int clz64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __clzll(static_cast<long long>(x));
#else
  return x ? __builtin_clzll(x) : 64;
#endif
}

// The signed 128-bit fixed-point total (hi, lo) as a float64, correctly rounded, times 2^-shift.
WSQ_HD double fixsum_to_double(uint64_t hi, uint64_t lo, int shift) {
  const bool neg = static_cast<int64_t>(hi) < 0;
  if (neg) { // two's complement negate
    lo = ~lo + 1u;
    hi = ~hi + (lo == 0 ? 1u : 0u);
  }
  double mag;
  int exp2 = -shift;
  if (hi == 0) {
    mag = static_cast<double>(lo); // u64 -> f64 rounds to nearest even
  } else {
    const int n = 64 - clz64(hi); // significant bits above the low word, 1..64
    uint64_t top, sticky;
    if (n == 64) {
      top = hi;
      sticky = lo != 0;
    } else {
      top = (hi << (64 - n)) | (lo >> n);
      sticky = (lo & ((uint64_t{1} << n) - 1u)) != 0;
    }
    // Bit 63 of top is set, so the rounding position is bit 10: a sticky bit in bit 0 keeps the
    // round-to-nearest-even decision exact.
    mag = static_cast<double>(top | sticky);
    exp2 += n;
  }
  const double r = ldexp(mag, exp2);
  return neg ? -r : r;
}

} // namespace wsq
