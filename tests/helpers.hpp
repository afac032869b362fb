// Test helpers: seeded random data and error measures against float64 references. Free of
// attn and kernel headers: both test executables use it (kernel_helpers.hpp, engine_fixture.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <span>
#include <vector>

namespace test {

/// Uniform floats in [lo, hi) from a fixed seed.
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

/// Returns max over i of |got - want| / (atol + rtol * |want|): <= 1 means within tolerance.
/// NaN in exactly one of the two counts as infinitely wrong; NaN in both matches.
template <class G, class W>
double max_error(std::span<const G> got, std::span<const W> want, double atol = 1e-5,
                 double rtol = 1e-5) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (std::isnan(g) || std::isnan(w)) {
      if (std::isnan(g) != std::isnan(w)) return INFINITY;
      continue;
    }
    if (std::isinf(w) || std::isinf(g)) {
      if (g != w) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::abs(g - w) / (atol + rtol * std::abs(w)));
  }
  return worst;
}

template <class G, class W>
double max_error(const std::vector<G>& got, const std::vector<W>& want, double atol = 1e-5,
                 double rtol = 1e-5) {
  return max_error(std::span<const G>(got), std::span<const W>(want), atol, rtol);
}

/// Returns max |got - want| (absolute), for comparisons with the book's 4-decimal values.
template <class G>
double max_abs_diff(std::span<const G> got, std::initializer_list<double> want) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0.0;
  std::size_t i = 0;
  for (double w : want) worst = std::max(worst, std::abs(static_cast<double>(got[i++]) - w));
  return worst;
}

}  // namespace test
