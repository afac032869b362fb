// The one description of a call that forward(), prefill(), step() and the batched step all
// lower to, and the pipeline that runs it: project Q/K/V, append K/V to caches, attend,
// project the output. See docs/design.md for the data flow.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attn/engine.hpp"
#include "attn/status.hpp"
#include "workspace.hpp"

namespace attn {
struct EngineState;
struct SessionState;
}  // namespace attn

namespace attn::detail {

/// How attention runs for every sequence of a call.
enum class AttentionPath {
  kFlash,    ///< flash attention over q-blocks (forward, prefill)
  kUnfused,  ///< scores materialised per (sequence, head) (forward, for comparison)
  kDecode,   ///< one query per sequence against its cache in fixed chunks (steps)
  kRagged,   ///< per sequence: kDecode for one new token, kFlash for more (Engine::advance)
};

/// A call being planned: leases a workspace, collects its sequences there (no allocation
/// once the workspace has held as many), then runs the pipeline.
class Call {
 public:
  explicit Call(const EngineState& st) noexcept;
  /// Makes room for `sequences` sequences; fails (nothing changed) when memory runs out.
  Status reserve(std::size_t sequences);
  /// Adds a sequence (after reserve()).
  void add(const SequenceCall& sequence) noexcept;
  /// Runs the pipeline: x [tokens, d_in] -> out [tokens, d_out] where tokens is the sum of the
  /// sequences' new_tokens. The caches' blocks for kv_len positions are reserved (all or
  /// nothing, cache_pool.hpp) after the last step that can fail, then keys and values are
  /// appended and each cache's position becomes its kv_len (a failed call changes no session).
  /// `stats` (optional) receives timings.
  Status run(const float* x, float* out, AttentionPath path, StepStats* stats = nullptr);

 private:
  const EngineState& st_;
  WorkspacePool::Lease ws_;
  std::size_t count_ = 0;
  std::size_t tokens_ = 0;
};

}  // namespace attn::detail
