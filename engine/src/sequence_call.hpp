// One sequence of a call, as the pipeline (plan.hpp) and the workspace that stores a call's
// list of them see it.
#pragma once

#include <cstddef>

namespace attn {
struct SessionState;
}

namespace attn::detail {

/// One sequence of a call: its new tokens are rows [first_row, first_row + new_tokens) of x,
/// of the activations and of out; after the call it has kv_len positions. Its keys and values
/// live in `cache` (the new ones appended at kv_len - new_tokens .. kv_len - 1), or, with no
/// cache, only in the call's activations (then kv_len == new_tokens).
struct SequenceCall {
  std::size_t first_row = 0;
  std::size_t new_tokens = 0;
  std::size_t kv_len = 0;
  SessionState* cache = nullptr;
  /// Attention as one query against the cache in fixed chunks (decode kernels) instead of
  /// the flash kernel over q-blocks; only with a cache.
  bool decode = false;
  std::size_t first_task = 0;     ///< set by the attention stage: its first task index
  std::size_t first_slot = 0;     ///< set by the attention stage: its first decode partial
  std::size_t blocks_before = 0;  ///< set by reserve_blocks: the cache's blocks before the call
};

}  // namespace attn::detail
