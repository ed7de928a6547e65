// Runtime choice of the instruction set for the CPU kernels. The wheel is compiled for baseline
// x86-64; kernels that use AVX2 or AVX-512 carry target attributes and are only called when the
// running CPU has them (and the user or a test has not capped the level).
#pragma once
#include <string>

namespace wsq {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The best level this CPU supports (detected once).
Isa detected_isa();
// The level kernels use now: detected, or lower if capped by set_isa (tests run every path).
Isa active_isa();
// Caps the level ("scalar", "avx2", "avx512"); a level above detected_isa() is refused.
void set_isa(const std::string& name);
std::string isa_name(Isa isa);
// Feature flags seen on this CPU, for wsq.info().
std::string cpu_feature_list();

}  // namespace wsq
