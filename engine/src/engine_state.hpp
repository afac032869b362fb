// What an Engine holds: the config, packed weights, the mask metadata, the scheduler and
// the workspace pool. Immutable after creation except the (internally synchronised) pool.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "attn/config.hpp"
#include "attn/engine.hpp"
#include "buffer.hpp"
#include "kernels/kernels.hpp"
#include "scheduler.hpp"
#include "tile_mask.hpp"
#include "workspace.hpp"

namespace attn {

/// One packed projection: y = x Wᵀ + b with W [n, k] packed for the engine's ISA.
struct PackedLinear {
  detail::AlignedBuffer packed;
  std::vector<float> bias;  // [n] or empty
  std::size_t n = 0;
  std::size_t k = 0;
  bool present() const noexcept { return n > 0; }
};

struct EngineState {
  Config config;
  kernels::Isa isa = kernels::Isa::kSse2;
  std::unique_ptr<detail::Scheduler> scheduler;
  int workers = 1;

  PackedLinear qkv;       // [3 * d_out, d_in]: W_query, W_key, W_value stacked
  PackedLinear out_proj;  // [d_out, d_out]

  std::size_t head_dim = 0;
  float scale = 1.0f;                 // 1/sqrt(head_dim), or 1 for the simplified variant
  std::size_t activation_cols = 0;    // columns of the activation buffer per token
  detail::TileMask mask;
  std::size_t worker_scratch_floats = 0;  // per worker, 64-byte multiple

  mutable detail::WorkspacePool pool;
};

namespace detail {

/// Runs C = A · Wᵀ + b over the scheduler, split into output tiles.
void run_linear(const EngineState& st, Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc);

/// Allocation failure as a Status naming what was being allocated.
Status out_of_memory(const char* what, std::size_t floats);

}  // namespace detail
}  // namespace attn
