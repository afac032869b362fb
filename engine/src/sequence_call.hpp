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
  std::size_t first_task = 0;  ///< set by the attention stage: its first task index
};

}  // namespace attn::detail
