// What a Session holds: its engine and the key/value cache of its past positions.
#pragma once

#include <cstdint>
#include <memory>

#include "buffer.hpp"
#include "engine_state.hpp"

namespace attn {

struct SessionState {
  std::shared_ptr<const EngineState> engine;
  detail::AlignedBuffer k_cache;  // [num_heads, context_length, head_dim]
  detail::AlignedBuffer v_cache;
  std::int64_t position = 0;
};

}  // namespace attn
