// GEMM kernels, C = A · Bᵀ + bias, templated on the xsimd architecture.
// PLACEHOLDER (issue 3 replaces it): plain loops, packed layout = B as [n][k].
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct GemmPackB {
  template <class Arch>
  static std::size_t packed_floats(Arch, std::size_t n, std::size_t k) noexcept {
    return n * k;
  }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* b, std::ptrdiff_t rs_n,
                                    std::ptrdiff_t rs_k, std::size_t n, std::size_t k,
                                    float* packed) const noexcept {
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t p = 0; p < k; ++p)
        packed[j * k + p] = b[static_cast<std::ptrdiff_t>(j) * rs_n +
                              static_cast<std::ptrdiff_t>(p) * rs_k];
  }
};

struct Gemm {
  template <class Arch>
  static std::size_t n_step(Arch) noexcept { return 1; }
  template <class Arch>
  static std::size_t scratch_floats(Arch) noexcept { return 0; }
  template <class Arch>
  static GemmBlock task_block(Arch) noexcept { return {64, 64}; }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const GemmArgs& g) const noexcept {
    for (std::size_t i = 0; i < g.m; ++i) {
      for (std::size_t j = g.n0; j < g.n0 + g.n; ++j) {
        const float* b = g.packed_b + j * g.k;
        const float* a = g.a + i * g.lda;
        float acc = 0.0f;
        for (std::size_t p = 0; p < g.k; ++p) acc += a[p] * b[p];
        g.c[i * g.ldc + j] = acc + (g.bias ? g.bias[j] : 0.0f);
      }
    }
  }
};

}  // namespace attn::kernels
