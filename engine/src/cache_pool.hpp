// What a CachePool holds: the block memory, per-block reference counts and the free list; and
// the reservation of a call's blocks (all or nothing) that the pipeline runs before any write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "attn/status.hpp"
#include "buffer.hpp"
#include "kernels/kernels.hpp"
#include "sequence_call.hpp"

namespace attn {

/// Block layout: [2][kv_heads][block_positions][head_dim] elements of kv_type, keys then
/// values, so one kv head's keys in a block are block_positions rows of stride head_dim
/// (kernels::KvPages); int8 then has [2][kv_heads][block_positions] f32 scales (one per
/// position, kv head, keys or values) at byte scale_offset.
/// Thread safety: the counts and the free list are guarded by `mutex`; a block's contents are
/// written only by the session that holds it alone (full blocks are never written again, which
/// is what makes sharing them safe).
struct CachePoolState {
  std::size_t kv_heads = 0;
  std::size_t head_dim = 0;
  std::size_t block_positions = 0;
  kernels::KvType kv_type = kernels::KvType::kF32;
  std::size_t scale_offset = 0;  // int8: bytes from a block's base to its scales
  std::size_t bytes_per_block = 0;
  std::size_t blocks = 0;
  detail::AlignedBuffer memory;  // blocks * bytes_per_block bytes (64-byte multiples)

  mutable std::mutex mutex;
  std::vector<std::uint32_t> refs;       // per block: tables that hold it
  std::vector<std::uint32_t> free_list;  // a stack of free block ids
  std::size_t used_blocks = 0;
  std::size_t peak_blocks = 0;

  std::size_t block_bytes() const noexcept { return bytes_per_block; }
  void* block(std::uint32_t id) const noexcept {
    return reinterpret_cast<unsigned char*>(memory.data()) + id * bytes_per_block;
  }

  /// Takes n free blocks (refcount 1), handing each id to sink(id), or fails naming the sizes
  /// (nothing taken). sink runs under the lock and must not call back into the pool.
  template <class Sink>
  Status take(std::size_t n, Sink&& sink) {
    std::lock_guard lock(mutex);
    if (n > free_list.size()) return exhausted(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t id = free_list.back();
      free_list.pop_back();
      refs[id] = 1;
      sink(id);
    }
    used_blocks += n;
    if (used_blocks > peak_blocks) peak_blocks = used_blocks;
    return {};
  }
  /// The error of a take() of n blocks that do not fit (called with the lock held).
  Status exhausted(std::size_t n) const;
  /// Adds a reference to each block (a fork sharing them).
  void share(std::span<const std::uint32_t> ids) noexcept;
  /// Drops a reference to each block; a block nobody holds is free again.
  void give_back(std::span<const std::uint32_t> ids) noexcept;
  /// Returns how many tables hold block `id`.
  std::uint32_t refs_of(std::uint32_t id) const noexcept;
};

/// Returns "f32", "bf16", "f16" or "int8".
const char* kv_type_name(kernels::KvType type) noexcept;

/// Returns the bytes of one block of B positions (see CachePoolState): keys and values of
/// kv_heads x head_dim elements of `type`, plus int8's scales.
std::size_t kv_block_bytes(std::size_t kv_heads, std::size_t head_dim, kernels::KvType type,
                           std::size_t block_positions) noexcept;

/// Makes a pool of `blocks` blocks for the given shape (kResourceExhausted if memory fails).
Result<std::shared_ptr<CachePoolState>> make_pool(std::size_t kv_heads, std::size_t head_dim,
                                                  kernels::KvType type, std::size_t blocks);

/// The blocks per session table that `positions` positions need.
inline std::size_t blocks_for(std::size_t positions, std::size_t block_positions) noexcept {
  return (positions + block_positions - 1) / block_positions;
}

namespace detail {

/// Gives every sequence with a cache the blocks its kv_len needs (recording in blocks_before
/// what it held): all or nothing across all sequences and pools; on failure nothing changed.
Status reserve_blocks(std::span<SequenceCall> sequences);
/// Undoes reserve_blocks (a later stage failed).
void unreserve_blocks(std::span<SequenceCall> sequences) noexcept;

}  // namespace detail
}  // namespace attn
