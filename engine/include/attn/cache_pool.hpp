// A shared, bounded KV-cache memory pool split into blocks (a paged cache, as vLLM's
// PagedAttention): sessions take blocks as they grow and give them back when released.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "attn/export.hpp"
#include "attn/status.hpp"

namespace attn {

class Engine;
class Session;
struct CachePoolState;

/// A budget of key/value cache memory split into blocks of block_positions() positions, shared
/// by the sessions (Engine::new_session(pool)) of engines with the same cache shape (kv heads
/// and head_dim). A session holds a table of blocks: its memory is its positions rounded up to
/// whole blocks, blocks shared by forks (Session::fork) counted once. When the pool cannot give
/// a call the blocks it needs, the call fails with kResourceExhausted naming the pool size, the
/// bytes in use and the bytes asked, and no session changes. The memory is allocated once at
/// create() (untouched pages stay virtual until a block is first written).
/// Copying a CachePool is cheap: copies are handles to the same pool, which lives as long as a
/// handle or a session of it does.
/// Thread safety: every member may be called from any thread at any time; sessions of one pool
/// may be advanced, forked and released concurrently from different threads.
class ATTN_API CachePool {
 public:
  /// Creates a pool of floor(budget_bytes / block_bytes) blocks shaped for `engine`'s cache
  /// (kv heads, head_dim and RunOptions::kv_dtype: only engines of that shape use it).
  /// Fails (kInvalidArgument) for a non-causal engine or a budget below one block, and
  /// (kResourceExhausted) when the memory cannot be allocated.
  static Result<CachePool> create(const Engine& engine, std::size_t budget_bytes);

  /// Returns B, the positions per block: 128, the flash kernel's key block, so that every key
  /// block the kernels read lies in one cache block and is read in place (no gather copy).
  std::int64_t block_positions() const noexcept;
  /// Returns the key and value bytes of one block: 2 * kv_heads * head_dim * B * e, e = 4
  /// (f32), 2 (bf16, f16) or 1 (int8, plus 2 * kv_heads * B * 4 bytes of scales), rounded up
  /// to 64 bytes.
  std::size_t block_bytes() const noexcept;
  /// Returns the bytes of all blocks: blocks * block_bytes().
  std::size_t capacity_bytes() const noexcept;
  /// Returns the bytes of the blocks sessions hold now (a shared block counted once).
  std::size_t used_bytes() const noexcept;
  /// Returns the largest used_bytes() since create() or the last reset_peak().
  std::size_t peak_used_bytes() const noexcept;
  /// Sets the peak to the current use.
  void reset_peak() noexcept;

 private:
  friend class Engine;
  friend class Session;
  explicit CachePool(std::shared_ptr<CachePoolState> state);
  std::shared_ptr<CachePoolState> state_;
};

}  // namespace attn
