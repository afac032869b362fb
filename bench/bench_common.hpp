// Shared helpers of the benchmark suites.
#pragma once

#include <cstdlib>

#include "attn/runtime.hpp"
#include "kernels/isa.hpp"

namespace bench {

/// The instruction set the kernel benchmarks run: ATTN_ISA when set, else the best one.
inline attn::kernels::Isa kernel_isa() {
  auto isa = attn::resolve_isa(attn::Isa::kAuto);
  if (!isa.ok()) return attn::kernels::best_isa();
  return static_cast<attn::kernels::Isa>(static_cast<int>(*isa) - 1);
}

}  // namespace bench
