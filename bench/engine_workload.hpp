// The engine benchmark workloads, shared by the Google Benchmark engine suite
// (bench/engine_forward.cpp), `attn bench` and `attn profile`: the presets, the layer they
// build and the random inputs. Public API only; every allocation sized by a flag is checked.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"

namespace attn::bench {

/// An attention layer (multi-head, out_proj) and the call shape measured on it. The defaults
/// are GPT-2 small's; the other fields follow LayerConfig (0: its default).
struct Workload {
  std::int64_t batch = 8, seq_len = 1024;
  std::int64_t d_model = 768, num_heads = 12;  ///< d_in = d_out = d_model
  bool causal = true;
  std::int64_t num_kv_heads = 0;  ///< 0: num_heads
  std::int64_t head_dim = 0;      ///< 0: d_model / num_heads
  Rope rope = Rope::kNone;
  double rope_theta = 10000;
  std::int64_t rope_dim = 0;  ///< 0: head_dim
  double scale = 0;           ///< 0: 1/sqrt(head_dim)
  std::int64_t window = 0;    ///< 0: none
  bool alibi = false;
  double softcap = 0;  ///< 0: none
  bool qkv_bias = true;
};

/// Returns the preset names, in the order `attn bench --help` lists them.
inline std::vector<std::string> preset_names() {
  return {"gpt2-small", "llama-3.2-1b", "qwen2-0.5b", "mistral-7b"};
}

/// Returns the named preset, or nothing for an unknown name. The attention layers of released
/// models (their config.json): gpt2-small (d 768, 12 heads, qkv bias), llama-3.2-1b (d 2048,
/// 32 heads, 8 kv heads, head_dim 64, rope neox, theta 500000), qwen2-0.5b (d 896, 14 heads,
/// 2 kv heads, head_dim 64, q/k/v bias, rope neox, theta 1000000), mistral-7b (d 4096, 32
/// heads, 8 kv heads, head_dim 128, rope neox, theta 10000, window 4096). All causal. batch x
/// seq_len: 8 x 1024, except llama 4 x 1024 (the comparison) and mistral 1 x 1024 (its
/// weights alone are 200 MB).
inline std::optional<Workload> preset(const std::string& name) {
  Workload w;
  if (name == "gpt2-small") return w;
  w.qkv_bias = false;
  w.rope = Rope::kNeox;
  if (name == "llama-3.2-1b") {
    w.batch = 4;
    w.d_model = 2048, w.num_heads = 32, w.num_kv_heads = 8, w.head_dim = 64;
    w.rope_theta = 500000;
    return w;
  }
  if (name == "qwen2-0.5b") {
    w.d_model = 896, w.num_heads = 14, w.num_kv_heads = 2, w.head_dim = 64;
    w.rope_theta = 1000000;
    w.qkv_bias = true;
    return w;
  }
  if (name == "mistral-7b") {
    w.batch = 1;
    w.d_model = 4096, w.num_heads = 32, w.num_kv_heads = 8, w.head_dim = 128;
    w.rope_theta = 10000;
    w.window = 4096;
    return w;
  }
  return std::nullopt;
}

/// Returns the layer's config: multi-head attention with out_proj, the workload's fields,
/// context_length `context_length`; threads, backend and isa are the RunOptions given to
/// make_engine.
inline LayerConfig layer_config(const Workload& w, std::int64_t context_length) {
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, w.d_model, w.d_model,
                                       w.num_heads, context_length);
  c.qkv_bias = w.qkv_bias;
  c.mask = w.causal ? Mask::kCausal : Mask::kNone;
  c.num_kv_heads = w.num_kv_heads;
  c.head_dim = w.head_dim;
  c.rope = w.rope;
  c.rope_theta = w.rope_theta;
  c.rope_dim = w.rope_dim;
  c.scale = w.scale;
  c.window = w.window;
  c.alibi = w.alibi;
  c.softcap = w.softcap;
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
