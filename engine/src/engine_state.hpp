// What an Engine holds: the layer, the run options, packed weights, the scheduler and the
// workspace pool. Immutable after creation except the (internally synchronised) pool.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "attn/config.hpp"
#include "kernels/isa.hpp"
#include "projection.hpp"
#include "scheduler.hpp"
#include "workspace.hpp"

namespace attn {

struct EngineState {
  LayerConfig config;
  RunOptions options;
  kernels::Isa isa = kernels::Isa::kSse2;
  kernels::KvType kv_type = kernels::KvType::kF32;  // options.kv_dtype
  std::unique_ptr<detail::Scheduler> scheduler;
  int workers = 1;

  detail::PackedLinear qkv;       // [q_dim + 2 * kv_dim, d_in]: W_query, W_key, W_value stacked
  detail::PackedLinear out_proj;  // [d_out, q_dim]

  bool causal = false;  // config.causal(), resolved once
  std::size_t head_dim = 0;
  std::size_t num_heads = 0;
  std::size_t kv_heads = 0;          // query head h reads kv head h / (num_heads / kv_heads)
  std::size_t q_dim = 0;             // num_heads * head_dim
  std::size_t kv_dim = 0;            // kv_heads * head_dim
  float scale = 1.0f;                // config.resolved_scale()
  std::size_t activation_cols = 0;   // columns of the activation buffer per token:
                                     // Q [0, q_dim), K [q_dim, +kv_dim), V after (or x for 3.3)
  std::size_t k_col = 0, v_col = 0;  // where K and V start in an activation row
  std::size_t rope_dim = 0;          // rotated features per head (0: no rotary embedding)
  std::vector<float> rope_cos, rope_sin;  // [context_length, rope_dim / 2], built at create
  float softcap = 0;                      // config.softcap (0: none)
  std::vector<float> alibi_slopes;        // [num_heads] when config.alibi, else empty

  /// Returns query head h's ALiBi slope (0: none).
  float alibi_slope(std::size_t h) const noexcept {
    return alibi_slopes.empty() ? 0.0f : alibi_slopes[h];
  }

  std::size_t worker_scratch_floats = 0;  // per worker, 64-byte multiple

  mutable detail::WorkspacePool pool;

  /// Returns max_workspace_bytes as a byte count (0: no limit).
  std::size_t workspace_limit() const noexcept {
    return static_cast<std::size_t>(options.max_workspace_bytes);
  }
};

}  // namespace attn
