// The machine's roofline, measured in the same run as the kernels: FMA peak and DRAM read
// bandwidth for the instruction set in use.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "bench_common.hpp"
#include "kernels/kernels.hpp"

namespace {

void BM_PeakFma(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  constexpr std::size_t kIterations = 1 << 20;
  double flops = 0;
  for (auto _ : state) flops = attn::kernels::peak_fma(isa, kIterations);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(attn::kernels::isa_name(isa));
}
BENCHMARK(BM_PeakFma)->UseRealTime()->Unit(benchmark::kMillisecond);

// The bf16 dot-product roof (vdpbf16ps, AVX512-BF16), for issue 15's compute_dtype bf16.
void BM_PeakBf16(benchmark::State& state) {
  if (!attn::kernels::bf16_dot_supported()) {
    state.SkipWithError("skipped: this CPU (or this build) has no AVX512-BF16 (vdpbf16ps)");
    return;
  }
  constexpr std::size_t kIterations = 1 << 20;
  double flops = 0;
  for (auto _ : state) flops = attn::kernels::peak_bf16(kIterations);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("avx512bf16");
}
BENCHMARK(BM_PeakBf16)->UseRealTime()->Unit(benchmark::kMillisecond);

// Reads a buffer of `mib` MiB (default 256: eight times this machine's L3) again and again.
void BM_Bandwidth(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const std::size_t n = static_cast<std::size_t>(state.range(0)) * (1u << 20) / sizeof(float);
  std::vector<float> buffer(n, 1.0f);
  for (auto _ : state) benchmark::DoNotOptimize(attn::kernels::read_sum(isa, buffer.data(), n));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n * sizeof(float)));
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(float)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(attn::kernels::isa_name(isa));
}
BENCHMARK(BM_Bandwidth)->ArgNames({"mib"})->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
