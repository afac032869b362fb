// Engine-level benchmarks through the public API: gpt2-small forward and decode steps.
#include <benchmark/benchmark.h>

#include <random>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"

namespace {

attn::Tensor random_tensor(attn::Shape shape) {
  attn::Tensor t(shape);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : t.values()) v = dist(gen);
  return t;
}

attn::Engine gpt2_engine(std::int64_t context, int threads) {
  attn::LayerConfig c = attn::LayerConfig::gpt2_small();
  c.context_length = context;
  attn::RunOptions run;
  run.threads = threads;
  auto w = attn::init_weights_like_torch(c, 123);
  auto e = attn::Engine::create(c, w.value(), run);
  return e.value();
}

// gpt2-small attention layer forward: batch x seq_len tokens, d 768, 12 heads, causal.
void BM_Forward(benchmark::State& state) {
  const std::int64_t batch = state.range(0), seq = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const auto impl = state.range(3) ? attn::AttentionImpl::kUnfused : attn::AttentionImpl::kFused;
  const attn::Engine engine = gpt2_engine(seq, threads);
  const attn::Tensor x = random_tensor(attn::Shape{batch, seq, 768});
  attn::Tensor y(attn::Shape{batch, seq, 768});
  if (!engine.forward(x.view(), y.view(), impl).ok()) state.SkipWithError("forward failed");
  for (auto _ : state) benchmark::DoNotOptimize(engine.forward(x.view(), y.view(), impl));
  const attn::Cost cost = engine.forward_cost(batch, seq);
  state.SetItemsProcessed(state.iterations() * batch * seq);
  state.counters["GFLOP/s"] = benchmark::Counter(cost.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
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
  const attn::Engine engine = gpt2_engine(context + kDecodeSteps + 1, threads);
  auto session = engine.new_session();
  const attn::Tensor prompt = random_tensor(attn::Shape{context, 768});
  attn::Tensor prompt_out(attn::Shape{context, 768});
  if (!session.ok() || !session->prefill(prompt.view(), prompt_out.view()).ok()) {
    state.SkipWithError("prefill failed");
    return;
  }
  const attn::Tensor x = random_tensor(attn::Shape{1, 768});
  attn::Tensor y(attn::Shape{1, 768});
  std::vector<attn::Session*> one = {&session.value()};
  double cache_bytes = 0;
  for (auto _ : state) {
    attn::StepStats stats;
    benchmark::DoNotOptimize(engine.step(one, x.view(), y.view(), &stats));
    cache_bytes = stats.cache_bytes_read;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(cache_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(engine.isa());
}
BENCHMARK(BM_DecodeStep)->ArgNames({"context", "threads"})->Args({1024, 1})->Args({4096, 1})->Args({4096, 2})
    ->UseRealTime()->Unit(benchmark::kMicrosecond)->Iterations(kDecodeSteps);

}  // namespace
