// The engine benchmark workloads, shared by the Google Benchmark engine suite
// (bench/engine_forward.cpp), `attn bench` and `attn profile`: the presets, the layer they
// build and the random inputs. Public API only; every allocation sized by a flag is checked.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"

namespace attn::bench {

/// A GPT-2-style attention layer (qkv_bias, out_proj) and the call shape measured on it.
struct Workload {
  std::int64_t batch = 8, seq_len = 1024;
  std::int64_t d_model = 768, num_heads = 12;  ///< d_in = d_out = d_model
  bool causal = true;
};

/// Returns the named preset ("gpt2-small": batch 8 x 1024 tokens, d 768, 12 heads, causal),
/// or nothing for an unknown name.
inline std::optional<Workload> preset(const std::string& name) {
  if (name == "gpt2-small") return Workload{};
  return std::nullopt;
}

/// Returns the layer's config: multi-head attention with qkv_bias, context_length
/// `context_length`; threads, backend and isa are the RunOptions given to make_engine.
inline LayerConfig layer_config(const Workload& w, std::int64_t context_length) {
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, w.d_model, w.d_model,
                                       w.num_heads, context_length);
  c.qkv_bias = true;
  c.mask = w.causal ? Mask::kCausal : Mask::kNone;
  return c;
}

/// Creates an engine over PyTorch-initialised weights (seed 123) for `c`, run as `run` says.
inline Result<Engine> make_engine(const LayerConfig& c, const RunOptions& run = {}) {
  Result<Weights> w = init_weights_like_torch(c, 123);
  if (!w.ok()) return w.status();
  return Engine::create(c, w.value(), run);
}

/// Returns a tensor of uniform values in [-1, 1) (mt19937 seeded with `seed`), or
/// kResourceExhausted when it does not fit in memory.
inline Result<Tensor> random_tensor(Shape shape, std::uint32_t seed) {
  Result<Tensor> t = Tensor::zeros(shape);
  if (!t.ok()) return t;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : t->values()) v = dist(gen);
  return t;
}

/// GFLOP/s of one forward over [batch, seq_len] that took `seconds` (the engine's own
/// FLOP count: projections plus the visible score/value pairs).
inline double forward_gflops(const Engine& e, std::int64_t batch, std::int64_t seq_len,
                             double seconds) {
  return e.forward_cost(batch, seq_len).flops / seconds * 1e-9;
}

}  // namespace attn::bench
