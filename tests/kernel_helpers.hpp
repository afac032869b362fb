// Helpers of the kernel tests (attn_kernel_tests, linked with the kernels only): the numeric
// helpers plus the instruction sets to cover.
#pragma once

#include <vector>

#include "helpers.hpp"
#include "kernels/isa.hpp"

namespace test {

/// The instruction sets this machine can run (the tests cover every one of them).
inline std::vector<attn::kernels::Isa> supported_isas() {
  std::vector<attn::kernels::Isa> isas;
  for (attn::kernels::Isa isa : attn::kernels::kAllIsas) {
    if (attn::kernels::isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

}  // namespace test
