// Per-call buffers, pooled per engine so that steady-state calls allocate nothing.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "buffer.hpp"

namespace attn {
struct SessionState;
}

namespace attn::detail {

/// One sequence of a decode step: its key/value cache ([heads, capacity, head_dim] each)
/// and the visible key range [kv_begin, kv_end).
struct DecodeSequence {
  const float* k_cache = nullptr;
  const float* v_cache = nullptr;
  std::size_t kv_begin = 0;
  std::size_t kv_end = 0;
};

/// The buffers one forward() or step() call uses. Only one call holds a workspace at a time.
struct Workspace {
  AlignedBuffer activations;  ///< projections: [tokens, 3 * d_out] (or a copy of x)
  AlignedBuffer scratch;      ///< workers x per-worker kernel scratch
  AlignedBuffer extra;        ///< the unfused path's scores, decode partials
  std::vector<SessionState*> session_states;  ///< a batched step's sessions
  std::vector<DecodeSequence> sequences;      ///< and their cache ranges

  /// Makes room for a step over n sequences; false if allocation fails.
  bool reserve_sequences(std::size_t n) noexcept {
    try {
      if (session_states.size() < n) session_states.resize(n);
      if (sequences.size() < n) sequences.resize(n);
      return true;
    } catch (...) {
      return false;
    }
  }

  /// Per-worker scratch of `floats_per_worker` floats for worker w (64-byte aligned).
  float* worker_scratch(int w, std::size_t floats_per_worker) const noexcept {
    return scratch.data() + static_cast<std::size_t>(w) * floats_per_worker;
  }
};

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
  Lease acquire() noexcept {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::unique_ptr<Workspace> ws = std::move(free_.back());
        free_.pop_back();
        return Lease(this, std::move(ws));
      }
    }
    return Lease(this, std::unique_ptr<Workspace>(new (std::nothrow) Workspace()));
  }

 private:
  static constexpr std::size_t kReserved = 64;  // concurrent callers before the list regrows

  void release(std::unique_ptr<Workspace> ws) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < free_.capacity()) free_.push_back(std::move(ws));
    // else: more than kReserved concurrent callers; drop it rather than allocate here.
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<Workspace>> free_;
};

}  // namespace attn::detail
