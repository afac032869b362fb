// Shared helpers of the kernel benchmark suites: the instruction set, aligned input buffers,
// the roofline probes every rate is divided by, and the counters that report it.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "kernels/isa.hpp"
#include "kernels/kernels.hpp"

namespace bench {

/// The instruction set the kernel benchmarks run: ATTN_ISA when it names one this CPU runs
/// ("sse2", "avx2", "avx512"), else the best one. Read from the kernel library alone: this
/// suite does not link libattn (one copy of the kernels per process).
inline attn::kernels::Isa kernel_isa() {
  const char* env = std::getenv("ATTN_ISA");
  if (env == nullptr) return attn::kernels::best_isa();
  for (attn::kernels::Isa isa : attn::kernels::kAllIsas) {
    if (std::string_view(env) == attn::kernels::isa_name(isa) &&
        attn::kernels::isa_supported(isa)) {
      return isa;
    }
  }
  return attn::kernels::best_isa();
}

/// 64-byte aligned float buffer filled with small pseudo-random values in [-0.5, 0.5).
struct Buffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  std::size_t n = 0;
  explicit Buffer(std::size_t count, std::uint32_t seed = 1) : n(count) {
    const std::size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
    data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    std::uint32_t x = seed * 2654435761u + 1;
    for (std::size_t i = 0; i < count; ++i) {
      x = x * 1664525u + 1013904223u;
      data.get()[i] = static_cast<float>(x >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
  }
  float* get() const { return data.get(); }
};

/// Seconds of the fastest of `reps` calls of f.
template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/// The FMA peak (GFLOP/s) of the benchmarked ISA: re-measured before every benchmark and the
/// best ever seen kept (on a shared machine a single measurement may land in a busy moment,
/// and contention can only lower a peak).
inline double peak_gflops() {
  static double peak = 0;
  const attn::kernels::Isa isa = kernel_isa();
  constexpr std::size_t kIterations = 1 << 20;
  double flops = 0;
  const double s = best_seconds(5, [&] { flops = attn::kernels::peak_fma(isa, kIterations); });
  peak = std::max(peak, flops / s * 1e-9);
  return peak;
}

/// The bf16 dot-product peak (GFLOP/s, vdpbf16ps), kept as peak_gflops; 0 without AVX512-BF16.
inline double peak_bf16_gflops() {
  static double peak = 0;
  if (!attn::kernels::bf16_dot_supported()) return 0;
  constexpr std::size_t kIterations = 1 << 20;
  double flops = 0;
  const double s = best_seconds(5, [&] { flops = attn::kernels::peak_bf16(kIterations); });
  peak = std::max(peak, flops / s * 1e-9);
  return peak;
}

/// Single-core read bandwidth (GB/s) over a 256 MiB buffer, kept as peak_gflops.
inline double read_gbps() {
  static double gbps = 0;
  static const std::size_t n = (256u << 20) / sizeof(float);
  static const Buffer buf(n);
  const attn::kernels::Isa isa = kernel_isa();
  const double s = best_seconds(
      3, [&] { benchmark::DoNotOptimize(attn::kernels::read_sum(isa, buf.get(), n)); });
  gbps = std::max(gbps, static_cast<double>(n * sizeof(float)) / s * 1e-9);
  return gbps;
}

/// Reports `giga_per_iteration` (GFLOP or GB) as the rate counter `name`, its fraction of
/// `roofline` (same unit per second) as `fraction_name`, and the ISA as the label.
inline void report_rate(benchmark::State& state, const char* name, double giga_per_iteration,
                        const char* fraction_name, double roofline) {
  state.counters[name] =
      benchmark::Counter(giga_per_iteration, benchmark::Counter::kIsIterationInvariantRate);
  // A rate divided by a constant: the achieved rate over the roofline.
  state.counters[fraction_name] = benchmark::Counter(giga_per_iteration / roofline,
                                                     benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(attn::kernels::isa_name(kernel_isa()));
}

}  // namespace bench
