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

/// Returns a * b, or SIZE_MAX when the product overflows (which no allocation satisfies).
inline std::size_t mul_or_max(std::size_t a, std::size_t b) noexcept {
  std::size_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

/// Grows one of ws's buffers to `floats`, within Config::max_workspace_bytes for the whole
/// workspace. Errors name `what`, the bytes and the limit.
Status grow(const EngineState& st, Workspace& ws, AlignedBuffer& buffer, std::size_t floats, const char* what);

/// Grows ws for a call over `tokens` rows: activations and per-worker kernel scratch.
Status prepare(const EngineState& st, Workspace& ws, std::size_t tokens);

}  // namespace detail
}  // namespace attn
