// Engine-level benchmarks through the public API: gpt2-small forward and decode steps.
#include <benchmark/benchmark.h>

#include "attn/engine.hpp"
#include "engine_workload.hpp"

namespace {

// The workloads, layer and inputs are the ones `attn bench` measures (engine_workload.hpp).
const attn::bench::Workload kGpt2 = *attn::bench::preset("gpt2-small");

attn::Result<attn::Engine> gpt2_engine(std::int64_t context, int threads) {
  attn::RunOptions run;
  run.threads = threads;
  return attn::bench::make_engine(attn::bench::layer_config(kGpt2, context), run);
}

attn::Tensor random_tensor(attn::Shape shape, std::uint32_t seed = 7) {
  auto t = attn::bench::random_tensor(shape, seed);
  return t.ok() ? std::move(t.value()) : attn::Tensor();
}

// gpt2-small attention layer forward: batch x seq_len tokens, d 768, 12 heads, causal.
void BM_Forward(benchmark::State& state) {
  const std::int64_t batch = state.range(0), seq = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const auto impl = state.range(3) ? attn::AttentionImpl::kUnfused : attn::AttentionImpl::kFused;
  const auto made = gpt2_engine(seq, threads);
  if (!made.ok()) {
    state.SkipWithError(made.status().to_string().c_str());
    return;
  }
  const attn::Engine& engine = made.value();
  const attn::Tensor x = random_tensor(attn::Shape{batch, seq, kGpt2.d_model});
  attn::Tensor y(attn::Shape{batch, seq, kGpt2.d_model});
  if (!engine.forward(x.view(), y.view(), impl).ok()) {
    state.SkipWithError("forward failed");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(engine.forward(x.view(), y.view(), impl));
  state.SetItemsProcessed(state.iterations() * batch * seq);
  // The engine's FLOP count, as attn bench divides it (bench::forward_gflops over 1 s).
  state.counters["GFLOP/s"] =
      benchmark::Counter(attn::bench::forward_gflops(engine, batch, seq, 1.0),
                         benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(engine.isa()) + (state.range(3) ? " unfused" : " fused"));
}
BENCHMARK(BM_Forward)
    ->ArgNames({"batch", "seq", "threads", "unfused"})
    ->Args({8, 1024, 1, 0})
    ->Args({8, 1024, 2, 0})
    ->Args({8, 1024, 2, 1})
    ->Args({1, 128, 1, 0})
    ->Args({1, 4096, 2, 0})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One decode step (batch 1, gpt2-small) against `context` cached positions; the cache grows
// by one per iteration, so the last steps see context + kDecodeSteps (< 5% more).
constexpr int kDecodeSteps = 50;
void BM_DecodeStep(benchmark::State& state) {
  const std::int64_t context = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const auto made = gpt2_engine(context + kDecodeSteps + 1, threads);
  if (!made.ok()) {
    state.SkipWithError(made.status().to_string().c_str());
    return;
  }
  const attn::Engine& engine = made.value();
  auto session = engine.new_session();
  const attn::Tensor prompt = random_tensor(attn::Shape{context, kGpt2.d_model}, 3);
  attn::Tensor prompt_out(attn::Shape{context, kGpt2.d_model});
  if (!session.ok() || !session->prefill(prompt.view(), prompt_out.view()).ok()) {
    state.SkipWithError("prefill failed");
    return;
  }
  const attn::Tensor x = random_tensor(attn::Shape{1, kGpt2.d_model}, 5);
  attn::Tensor y(attn::Shape{1, kGpt2.d_model});
  std::vector<attn::Session*> one = {&session.value()};
  double cache_bytes = 0;
  for (auto _ : state) {
    attn::StepStats stats;
    benchmark::DoNotOptimize(engine.step(one, x.view(), y.view(), &stats));
    cache_bytes = stats.cache_bytes_read;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["GB/s"] =
      benchmark::Counter(cache_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(engine.isa());
}
BENCHMARK(BM_DecodeStep)
    ->ArgNames({"context", "threads"})
    ->Args({1024, 1})
    ->Args({4096, 1})
    ->Args({4096, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(kDecodeSteps);

}  // namespace
