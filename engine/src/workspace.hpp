// Per-call buffers, pooled per engine so that steady-state calls allocate nothing, and the
// policy that grows them (within RunOptions::max_workspace_bytes) and names what failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "attn/status.hpp"
#include "buffer.hpp"
#include "sequence_call.hpp"

namespace attn::detail {

/// The buffers one call uses. Only one call holds a workspace at a time.
struct Workspace {
  AlignedBuffer activations;            ///< projections: [tokens, activation_cols] (or a copy of x)
  AlignedBuffer scratch;                ///< workers x per-worker kernel scratch
  AlignedBuffer extra;                  ///< the unfused path's scores, decode partials
  std::vector<SequenceCall> sequences;  ///< the call's plan (see plan.hpp)

  /// Per-worker scratch of `floats_per_worker` floats for worker w (64-byte aligned).
  float* worker_scratch(int w, std::size_t floats_per_worker) const noexcept {
    return scratch.data() + static_cast<std::size_t>(w) * floats_per_worker;
  }
  /// Returns the bytes the three buffers hold.
  std::size_t buffer_bytes() const noexcept {
    return activations.bytes() + scratch.bytes() + extra.bytes();
  }
};

/// Returns a * b, or SIZE_MAX when the product overflows (which no allocation satisfies).
inline std::size_t mul_or_max(std::size_t a, std::size_t b) noexcept {
  std::size_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

/// Allocation failure as a Status naming what was being allocated and its size in bytes
/// (SIZE_MAX: a size past 2^64).
Status out_of_memory(const char* what, std::size_t bytes);

/// Grows one of ws's buffers to `floats`, keeping the whole workspace within `limit_bytes`
/// (0: no limit). A refused call frees every buffer, so that what it grew cannot refuse later
/// calls that fit. Errors name `what`, the bytes and the limit.
Status grow(Workspace& ws, AlignedBuffer& buffer, std::size_t floats, const char* what,
            std::size_t limit_bytes);

/// A free list of workspaces. acquire() reuses one when available (no allocation), else
/// creates one; the list keeps every workspace ever created, so after warm-up with the
/// largest concurrent load, calls allocate nothing.
/// Thread safety: all members may be called concurrently.
class WorkspacePool {
 public:
  WorkspacePool() { free_.reserve(kReserved); }

  class Lease {
   public:
    Lease(WorkspacePool* pool, std::unique_ptr<Workspace> ws) : pool_(pool), ws_(std::move(ws)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (ws_) pool_->release(std::move(ws_));
    }
    Workspace* operator->() const noexcept { return ws_.get(); }
    Workspace& operator*() const noexcept { return *ws_; }
    explicit operator bool() const noexcept { return ws_ != nullptr; }

   private:
    WorkspacePool* pool_;
    std::unique_ptr<Workspace> ws_;
  };

  /// Returns a workspace, or an empty lease when memory runs out.
  Lease acquire() noexcept;

 private:
  static constexpr std::size_t kReserved = 64;  // concurrent callers before the list regrows

  void release(std::unique_ptr<Workspace> ws) noexcept;

  std::mutex mu_;
  std::vector<std::unique_ptr<Workspace>> free_;
};

}  // namespace attn::detail
