// GEMM kernel benchmarks, single thread: C[m, n] = A[m, k] · Bᵀ + bias from pre-packed B,
// reported as GFLOP/s, tokens/s (rows of A) and the fraction of the measured FMA peak.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>

#include "bench_common.hpp"
#include "kernels/kernels.hpp"

namespace {

struct FreeDeleter {
  void operator()(float* p) const noexcept { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

// 64-byte aligned, filled with values in [-1, 1).
AlignedFloats aligned_random(std::size_t n, unsigned seed) {
  const std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64 + 64;
  AlignedFloats p(static_cast<float*>(std::aligned_alloc(64, bytes)));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (std::size_t i = 0; i < n; ++i) p[i] = dist(gen);
  return p;
}

// The FMA peak of `isa` in GFLOP/s, measured once per process (about 50 ms).
double peak_gflops(attn::kernels::Isa isa) {
  static std::map<attn::kernels::Isa, double> cache;
  auto it = cache.find(isa);
  if (it != cache.end()) return it->second;
  constexpr std::size_t kIterations = 1 << 20;
  attn::kernels::peak_fma(isa, kIterations);  // warm up (clock ramp)
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    benchmark::ClobberMemory();
    const auto t0 = std::chrono::steady_clock::now();
    const double flops = attn::kernels::peak_fma(isa, kIterations);
    const auto t1 = std::chrono::steady_clock::now();
    best = std::max(best, flops * 1e-9 / std::chrono::duration<double>(t1 - t0).count());
  }
  return cache[isa] = best;
}

void BM_Gemm(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto k = static_cast<std::size_t>(state.range(2));
  const AlignedFloats a = aligned_random(m * k, 1);
  const AlignedFloats b = aligned_random(n * k, 2);  // nn.Linear layout [n, k]
  const AlignedFloats bias = aligned_random(n, 3);
  const AlignedFloats packed = aligned_random(attn::kernels::gemm_packed_floats(isa, n, k), 4);
  const AlignedFloats c = aligned_random(m * n, 5);
  const AlignedFloats scratch = aligned_random(attn::kernels::gemm_scratch_floats(isa), 6);
  attn::kernels::gemm_pack_b(isa, b.get(), static_cast<std::ptrdiff_t>(k), 1, n, k, packed.get());
  attn::kernels::GemmArgs g;
  g.a = a.get();
  g.lda = static_cast<std::ptrdiff_t>(k);
  g.packed_b = packed.get();
  g.n_total = n;
  g.m = m;
  g.k = k;
  g.n0 = 0;
  g.n = n;
  g.bias = bias.get();
  g.c = c.get();
  g.ldc = static_cast<std::ptrdiff_t>(n);
  g.scratch = scratch.get();
  for (auto _ : state) {
    attn::kernels::gemm(isa, g);
    benchmark::ClobberMemory();
  }
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(m));
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // A rate divided by a constant: achieved GFLOP/s over the peak GFLOP/s.
  state.counters["peak_frac"] = benchmark::Counter(flops * 1e-9 / peak_gflops(isa),
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(attn::kernels::isa_name(isa));
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"m", "n", "k"})
    ->Args({8192, 768, 768})   // gpt2-small out_proj / one of Q, K, V over 8 x 1024 tokens
    ->Args({8192, 2304, 768})  // gpt2-small fused QKV
    ->Args({1024, 1024, 64})   // one head's Q·Kᵀ on the unfused path (seq 1024, head_dim 64)
    ->Args({1024, 64, 1024})   // one head's P·V on the unfused path
    ->Args({64, 768, 768})     // a short prompt
    ->Args({1, 768, 768})      // one token (decode-like, memory-bound)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Packing B: nn.Linear's [n, k] (transposing) and [k, n] (copying) layouts.
void BM_GemmPackB(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto k = static_cast<std::size_t>(state.range(1));
  const bool transposed = state.range(2) != 0;
  const AlignedFloats b = aligned_random(n * k, 1);
  const AlignedFloats packed = aligned_random(attn::kernels::gemm_packed_floats(isa, n, k), 2);
  const std::ptrdiff_t rs_n = transposed ? 1 : static_cast<std::ptrdiff_t>(k);
  const std::ptrdiff_t rs_k = transposed ? static_cast<std::ptrdiff_t>(n) : 1;
  for (auto _ : state) {
    attn::kernels::gemm_pack_b(isa, b.get(), rs_n, rs_k, n, k, packed.get());
    benchmark::ClobberMemory();
  }
  const double bytes = 2.0 * static_cast<double>(n * k * sizeof(float));
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(attn::kernels::isa_name(isa));
}
BENCHMARK(BM_GemmPackB)
    ->ArgNames({"n", "k", "kn"})
    ->Args({768, 768, 0})  // weights, nn.Linear layout
    ->Args({1024, 64, 0})  // one head's K (rows of the activations)
    ->Args({64, 1024, 1})  // one head's V ([k, n] view)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
