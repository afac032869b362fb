// Decode with grouped-query heads through the public API: a llama-3.2-1b-shaped attention
// layer (d 2048, 32 heads, head_dim 64) with 8 kv heads against the same layer with 32, one
// session, 16384 cached positions. The attention part's time (StepStats::attention_ns) is
// what the grouped decode kernel saves: it reads each kv head's cache once for its 4 query
// heads, so the issue asks for <= 0.35x of the 32-kv-head time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"

namespace {

constexpr std::int64_t kDModel = 2048, kHeads = 32, kHeadDim = 64;
constexpr int kSteps = 20;

void BM_DecodeGqa(benchmark::State& state) {
  const std::int64_t kv_heads = state.range(0), context = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  attn::LayerConfig c = attn::LayerConfig::chapter(attn::Variant::kMultiHeadAttention, kDModel,
                                                   kDModel, kHeads, context + kSteps + 1);
  c.num_kv_heads = kv_heads;
  c.head_dim = kHeadDim;
  auto w = attn::init_weights_like_torch(c, 1);
  attn::RunOptions run;
  run.threads = threads;
  if (!w.ok()) {
    state.SkipWithError(w.status().to_string().c_str());
    return;
  }
  auto engine = attn::Engine::create(c, w.value(), run);
  if (!engine.ok()) {
    state.SkipWithError(engine.status().to_string().c_str());
    return;
  }
  auto session = engine->new_session();
  // Prefill in pieces (one [context, d] input would be 128 MiB).
  constexpr std::int64_t kPiece = 1024;
  attn::Tensor piece(attn::Shape{kPiece, kDModel}, std::vector<float>(kPiece * kDModel, 0.01f));
  attn::Tensor piece_out(attn::Shape{kPiece, kDModel});
  for (std::int64_t done = 0; session.ok() && done < context; done += kPiece) {
    const std::int64_t n = std::min(kPiece, context - done);
    if (!session
             ->prefill(attn::ConstTensorView(piece.data(), attn::Shape{n, kDModel}),
                       attn::TensorView(piece_out.data(), attn::Shape{n, kDModel}))
             .ok()) {
      state.SkipWithError("prefill failed");
      return;
    }
  }
  const attn::Tensor x(attn::Shape{1, kDModel}, std::vector<float>(kDModel, 0.02f));
  attn::Tensor y(attn::Shape{1, kDModel});
  std::vector<attn::Session*> one = {&session.value()};
  std::int64_t attention_ns = 0;
  double cache_bytes = 0;
  for (auto _ : state) {
    attn::StepStats stats;
    benchmark::DoNotOptimize(engine->step(one, x.view(), y.view(), &stats));
    attention_ns += stats.attention_ns;
    cache_bytes = stats.cache_bytes_read;
  }
  const double steps = static_cast<double>(state.iterations());
  state.counters["attention_ms"] = static_cast<double>(attention_ns) * 1e-6 / steps;
  state.counters["cache_GB/s"] =
      cache_bytes * steps / (static_cast<double>(attention_ns) * 1e-9) * 1e-9;
  state.SetLabel(std::string(engine->isa()) + " kv_heads " + std::to_string(kv_heads));
}
BENCHMARK(BM_DecodeGqa)
    ->ArgNames({"kv_heads", "context", "threads"})
    ->Args({8, 16384, 2})
    ->Args({32, 16384, 2})
    ->Args({8, 16384, 1})
    ->Args({32, 16384, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(kSteps);

}  // namespace
