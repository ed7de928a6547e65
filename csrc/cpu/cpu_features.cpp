#include "cpu_features.h"

#include <atomic>
#include <stdexcept>

namespace wsq {

static Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // AVX-512 kernels use F + BW + VL (byte/word shuffles on 256- and 512-bit vectors).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

static std::atomic<int> g_cap{-1};

Isa active_isa() {
  int cap = g_cap.load(std::memory_order_relaxed);
  Isa d = detected_isa();
  if (cap < 0 || cap > static_cast<int>(d)) return d;
  return static_cast<Isa>(cap);
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

void set_isa(const std::string& name) {
  Isa want;
  if (name == "scalar") want = Isa::kScalar;
  else if (name == "avx2") want = Isa::kAvx2;
  else if (name == "avx512") want = Isa::kAvx512;
  else if (name == "auto") { g_cap.store(-1); return; }
  else throw std::invalid_argument("isa must be 'auto', 'scalar', 'avx2' or 'avx512', not '" + name + "'");
  if (static_cast<int>(want) > static_cast<int>(detected_isa()))
    throw std::invalid_argument("isa '" + name + "' is not supported by this CPU (best: " +
                                isa_name(detected_isa()) + ")");
  g_cap.store(static_cast<int>(want));
}

std::string cpu_feature_list() {
  std::string out;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const char* names[] = {"sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                         "avx512vbmi"};
  const bool have[] = {
      (bool)__builtin_cpu_supports("sse4.2"),   (bool)__builtin_cpu_supports("avx"),
      (bool)__builtin_cpu_supports("avx2"),     (bool)__builtin_cpu_supports("fma"),
      (bool)__builtin_cpu_supports("f16c"),     (bool)__builtin_cpu_supports("avx512f"),
      (bool)__builtin_cpu_supports("avx512bw"), (bool)__builtin_cpu_supports("avx512vl"),
      (bool)__builtin_cpu_supports("avx512vbmi")};
  for (unsigned i = 0; i < sizeof(have) / sizeof(have[0]); ++i)
    if (have[i]) out += (out.empty() ? "" : ",") + std::string(names[i]);
#endif
  return out;
}

}  // namespace wsq
