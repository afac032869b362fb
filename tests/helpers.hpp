// Test helpers: seeded random data and error measures against float64 references.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <span>
#include <vector>

#include "attn/engine.hpp"
#include "attn/chapter/reference.hpp"
#include "kernels/isa.hpp"

namespace test {

/// Uniform floats in [lo, hi) from a fixed seed.
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

/// Returns max over i of |got - want| / (atol + rtol * |want|): <= 1 means within tolerance.
/// NaN in exactly one of the two counts as infinitely wrong; NaN in both matches.
template <class G, class W>
double max_error(std::span<const G> got, std::span<const W> want, double atol = 1e-5, double rtol = 1e-5) {
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
double max_error(const std::vector<G>& got, const std::vector<W>& want, double atol = 1e-5, double rtol = 1e-5) {
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

/// The instruction sets this machine can run (the tests cover every one of them).
inline std::vector<attn::kernels::Isa> supported_isas() {
  std::vector<attn::kernels::Isa> isas;
  for (int i = 0; i < attn::kernels::kIsaCount; ++i) {
    const auto isa = static_cast<attn::kernels::Isa>(i);
    if (attn::kernels::isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

/// The threaded backends the tests may use. libtbb and libgomp are not built with
/// ThreadSanitizer, so their internal hand-offs look like races to it: under TSan none are
/// used (the serial backend with many caller threads still exercises the engine's own
/// synchronisation).
inline std::vector<attn::Backend> threaded_backends() {
#if defined(__SANITIZE_THREAD__)
  return {};
#else
  return {attn::Backend::kTbb, attn::Backend::kOpenMp};
#endif
}

/// The backend a multi-threaded test should use: TBB, or serial under TSan.
inline attn::Backend threaded_backend() {
  const auto b = threaded_backends();
  return b.empty() ? attn::Backend::kSerial : b.front();
}

}  // namespace test
