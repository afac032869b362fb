// What a Session holds: its engine, its cache pool and the table of blocks that hold the keys
// and values of its past positions.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cache_pool.hpp"
#include "engine_state.hpp"

namespace attn {

struct SessionState {
  std::shared_ptr<const EngineState> engine;
  std::shared_ptr<CachePoolState> pool;
  std::vector<std::uint32_t> blocks;    // block ids in position order; capacity reserved for
                                        // context_length positions, so growing never allocates
  std::vector<const void*> block_ptrs;  // their bases (the kernels' table, KvPages::blocks)
  std::int64_t position = 0;
  bool private_pool = false;  // from Engine::new_session(): the pool is this session's alone

  SessionState() = default;
  SessionState(const SessionState&) = delete;
  SessionState& operator=(const SessionState&) = delete;
  ~SessionState() { release(); }

  /// Returns every block to the pool; position becomes 0.
  void release() noexcept {
    if (pool && !blocks.empty()) pool->give_back(blocks);
    blocks.clear();
    block_ptrs.clear();
    position = 0;
  }
};

}  // namespace attn
