// GEMM kernel benchmarks, single thread: C[m, n] = A[m, k] · Bᵀ + bias from pre-packed B,
// reported as GFLOP/s, tokens/s (rows of A) and the fraction of the measured FMA peak.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"

namespace {

using bench::Buffer;

void BM_Gemm(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto k = static_cast<std::size_t>(state.range(2));
  const Buffer a(m * k, 1);
  const Buffer b(n * k, 2);  // nn.Linear layout [n, k]
  const Buffer bias(n, 3);
  const Buffer packed(attn::kernels::gemm_packed_floats(isa, n, k), 4);
  const Buffer c(m * n, 5);
  const Buffer scratch(attn::kernels::gemm_scratch_floats(isa), 6);
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
  bench::report_rate(state, "GFLOP/s", flops * 1e-9, "peak_frac", bench::peak_gflops());
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

// The GEMM on f32, bf16 and f16 packed weights (issue 15): same FLOPs, half the weight bytes.
// One row (a decode step's projection) streams the weights from memory once per call: the
// weight_GB/s counter is the rate of those bytes. 8192 rows is compute-bound.
void BM_GemmWeightType(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto k = static_cast<std::size_t>(state.range(2));
  const auto type = static_cast<attn::kernels::WeightType>(state.range(3));
  const bool narrow = type != attn::kernels::WeightType::kF32;
  const Buffer a(m * k, 1);
  const Buffer b(n * k, 2);
  const Buffer bias(n, 3);
  const std::size_t elems = attn::kernels::gemm_packed_floats(isa, n, k);
  const Buffer packed(narrow ? elems / 2 + 1 : elems, 4);
  const Buffer c(m * n, 5);
  const Buffer scratch(attn::kernels::gemm_scratch_floats(isa), 6);
  auto* packed16 = reinterpret_cast<std::uint16_t*>(packed.get());
  if (narrow) {
    std::vector<std::uint16_t> halves(n * k);
    for (std::size_t i = 0; i < n * k; ++i)
      halves[i] = attn::kernels::narrow16(b.get()[i], type).bits;
    attn::kernels::gemm_pack_b16(isa, halves.data(), static_cast<std::ptrdiff_t>(k), 1, n, k,
                                 packed16);
  } else {
    attn::kernels::gemm_pack_b(isa, b.get(), static_cast<std::ptrdiff_t>(k), 1, n, k, packed.get());
  }
  attn::kernels::GemmArgs g;
  g.a = a.get();
  g.lda = static_cast<std::ptrdiff_t>(k);
  g.b_type = type;
  g.packed_b = packed.get();
  g.packed_b16 = packed16;
  g.n_total = n;
  g.m = m;
  g.k = k;
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
  const double weight_bytes = static_cast<double>(elems) * (narrow ? 2.0 : 4.0);
  state.counters["weight_GB/s"] =
      benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  bench::report_rate(state, "GFLOP/s", flops * 1e-9, "peak_frac", bench::peak_gflops());
  state.SetLabel(std::string(attn::kernels::isa_name(isa)) +
                 (type == attn::kernels::WeightType::kF32
                      ? " f32"
                      : (type == attn::kernels::WeightType::kBf16 ? " bf16" : " f16")));
}
BENCHMARK(BM_GemmWeightType)
    ->ArgNames({"m", "n", "k", "type"})              // type: 0 f32, 1 bf16, 2 f16
    ->ArgsProduct({{1}, {2304}, {768}, {0, 1, 2}})   // gpt2-small QKV, one token
    ->ArgsProduct({{1}, {3072}, {2048}, {0, 1, 2}})  // llama-3.2-1b QKV, one token
    ->ArgsProduct({{8192}, {2304}, {768}, {0, 1}})   // gpt2-small QKV, 8 x 1024 tokens
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// compute_dtype bf16's GEMMs (issue 15) on bf16 weights: path 0 is the f32 FMA kernel of the
// benchmarked ISA on A rounded to bf16 as it is packed (CPUs without AVX512-BF16; compare with
// BM_GemmWeightType's bf16 row: the rounding's cost), path 1 vdpbf16ps (skipped without
// AVX512-BF16), whose peak_frac is against the bf16 dot-product probe (BM_PeakBf16).
void BM_GemmComputeBf16(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto k = static_cast<std::size_t>(state.range(2));
  const bool dot = state.range(3) == 1;
  if (dot && !attn::kernels::bf16_dot_supported()) {
    state.SkipWithError("skipped: this CPU (or this build) has no AVX512-BF16 (vdpbf16ps)");
    return;
  }
  const Buffer a(m * k, 1);
  const Buffer b(n * k, 2);
  const Buffer bias(n, 3);
  const std::size_t elems = dot ? attn::kernels::gemm_dot_packed_elems(n, k)
                                : attn::kernels::gemm_packed_floats(isa, n, k);
  const Buffer packed(elems / 2 + 1, 4);
  const Buffer c(m * n, 5);
  const Buffer scratch(
      dot ? attn::kernels::gemm_dot_scratch_floats() : attn::kernels::gemm_scratch_floats(isa), 6);
  auto* packed16 = reinterpret_cast<std::uint16_t*>(packed.get());
  std::vector<std::uint16_t> halves(n * k);
  for (std::size_t i = 0; i < n * k; ++i) halves[i] = attn::kernels::f32_to_bf16(b.get()[i]).bits;
  if (dot) {
    attn::kernels::gemm_dot_pack_b(halves.data(), static_cast<std::ptrdiff_t>(k), 1, n, k,
                                   packed16);
  } else {
    attn::kernels::gemm_pack_b16(isa, halves.data(), static_cast<std::ptrdiff_t>(k), 1, n, k,
                                 packed16);
  }
  attn::kernels::GemmArgs g;
  g.a = a.get();
  g.lda = static_cast<std::ptrdiff_t>(k);
  g.b_type = attn::kernels::WeightType::kBf16;
  g.packed_b16 = packed16;
  g.n_total = n;
  g.m = m;
  g.k = k;
  g.n = n;
  g.bias = bias.get();
  g.c = c.get();
  g.ldc = static_cast<std::ptrdiff_t>(n);
  g.scratch = scratch.get();
  g.round_a_bf16 = !dot;
  for (auto _ : state) {
    if (dot) {
      attn::kernels::gemm_bf16_dot(g);
    } else {
      attn::kernels::gemm(isa, g);
    }
    benchmark::ClobberMemory();
  }
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(m));
  bench::report_rate(state, "GFLOP/s", flops * 1e-9, "peak_frac",
                     dot ? bench::peak_bf16_gflops() : bench::peak_gflops());
  state.SetLabel(dot ? std::string("avx512bf16 vdpbf16ps")
                     : std::string(attn::kernels::isa_name(isa)) + " f32 FMA, A rounded to bf16");
}
BENCHMARK(BM_GemmComputeBf16)
    ->ArgNames({"m", "n", "k", "dot"})
    ->ArgsProduct({{8192}, {2304}, {768}, {0, 1}})  // gpt2-small QKV, 8 x 1024 tokens
    ->ArgsProduct({{8192}, {768}, {768}, {0, 1}})   // gpt2-small out_proj
    ->ArgsProduct({{1}, {2304}, {768}, {0, 1}})     // one token
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Packing B: nn.Linear's [n, k] (transposing) and [k, n] (copying) layouts.
void BM_GemmPackB(benchmark::State& state) {
  const attn::kernels::Isa isa = bench::kernel_isa();
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto k = static_cast<std::size_t>(state.range(1));
  const bool transposed = state.range(2) != 0;
  const Buffer b(n * k, 1);
  const Buffer packed(attn::kernels::gemm_packed_floats(isa, n, k), 2);
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
