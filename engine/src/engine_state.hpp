// What an Engine holds: the layer, the run options, packed weights, the scheduler and the
// workspace pool. Immutable after creation except the (internally synchronised) pool.
#pragma once

#include <cstddef>
#include <memory>

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
  std::unique_ptr<detail::Scheduler> scheduler;
  int workers = 1;

  detail::PackedLinear qkv;       // [3 * d_out, d_in]: W_query, W_key, W_value stacked
  detail::PackedLinear out_proj;  // [d_out, d_out]

  bool causal = false;                // config.causal(), resolved once
  std::size_t head_dim = 0;
  float scale = 1.0f;                 // 1/sqrt(head_dim), or 1 for the simplified variant
  std::size_t activation_cols = 0;    // columns of the activation buffer per token
  std::size_t worker_scratch_floats = 0;  // per worker, 64-byte multiple

  mutable detail::WorkspacePool pool;

  /// Returns max_workspace_bytes as a byte count (0: no limit).
  std::size_t workspace_limit() const noexcept {
    return static_cast<std::size_t>(options.max_workspace_bytes);
  }
};

}  // namespace attn
