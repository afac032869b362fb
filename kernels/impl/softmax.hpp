// Row softmax with causal masking (the unfused path) and the vector exp.
// PLACEHOLDER (issue 3 replaces it): plain loops.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct VectorExp {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* x, float* y, std::size_t n) const noexcept {
    for (std::size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
  }
};

struct MaskedSoftmaxRows {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, float* s, std::ptrdiff_t ld, std::size_t rows,
                                    std::size_t cols, float scale, bool causal,
                                    std::ptrdiff_t visible_offset,
                                    std::size_t window) const noexcept {
    for (std::size_t r = 0; r < rows; ++r) {
      float* row = s + static_cast<std::ptrdiff_t>(r) * ld;
      const std::ptrdiff_t limit = static_cast<std::ptrdiff_t>(r) + visible_offset;
      const std::ptrdiff_t lo = (causal && window > 0) ? limit - static_cast<std::ptrdiff_t>(window) : -1;
      auto vis = [&](std::size_t c) {
        const auto cc = static_cast<std::ptrdiff_t>(c);
        return !causal || (cc <= limit && cc > lo);
      };
      float mx = -std::numeric_limits<float>::infinity();
      for (std::size_t c = 0; c < cols; ++c) {
        if (vis(c)) {
          row[c] *= scale;
          mx = (row[c] > mx || std::isnan(row[c])) ? row[c] : mx;
        }
      }
      if (mx == -std::numeric_limits<float>::infinity()) {
        for (std::size_t c = 0; c < cols; ++c) row[c] = 0.0f;
        continue;
      }
      float sum = 0.0f;
      for (std::size_t c = 0; c < cols; ++c) {
        row[c] = vis(c) ? std::exp(row[c] - mx) : 0.0f;
        sum += row[c];
      }
      for (std::size_t c = 0; c < cols; ++c) row[c] /= sum;
    }
  }
};

}  // namespace attn::kernels
