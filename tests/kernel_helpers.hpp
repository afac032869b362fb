// Helpers of the kernel tests (attn_kernel_tests, linked with the kernels only): the numeric
// helpers plus the instruction sets to cover.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <memory>
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

/// n elements of T, 64-byte aligned (as the kernels' packed buffers and scratch must be).
template <class T>
struct Aligned {
  struct Free {
    void operator()(T* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<T[], Free> p;
  explicit Aligned(std::size_t n)
      : p(static_cast<T*>(
            std::aligned_alloc(64, std::max<std::size_t>(64, (n * sizeof(T) + 63) / 64 * 64)))) {}
  T* get() const { return p.get(); }
};

}  // namespace test
