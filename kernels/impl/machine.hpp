// Roofline probes: peak FMA throughput and streaming read bandwidth, per architecture.
// PLACEHOLDER (issue 3 replaces it): scalar loops.
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace attn::kernels {

struct PeakFma {
  template <class Arch>
  [[gnu::noinline]] double operator()(Arch, std::size_t iterations) const noexcept {
    float a = 1.0f;
    for (std::size_t i = 0; i < iterations; ++i) a = a * 0.999f + 0.001f;
    return static_cast<double>(iterations) * 2.0 + (a > 2.0f ? 1.0 : 0.0);
  }
};

struct ReadSum {
  template <class Arch>
  [[gnu::noinline]] float operator()(Arch, const float* data, std::size_t n) const noexcept {
    float s = 0.0f;
    for (std::size_t i = 0; i < n; ++i) s += data[i];
    return s;
  }
};

}  // namespace attn::kernels
