// Rotary position embeddings: the tables, built once per engine, and the pipeline stage that
// rotates the new rows' queries and keys at their absolute positions.
#pragma once

#include <span>

#include "attn/config.hpp"
#include "sequence_call.hpp"

namespace attn {
struct EngineState;
}

namespace attn::detail {

struct Workspace;

/// Fills st.rope_dim and st.rope_cos/rope_sin [context_length, rope_dim / 2] as the Hugging
/// Face code computes them, in float32: inv_freq[i] = 1 / theta^(2i / rope_dim), angle =
/// position * inv_freq[i], then cos and sin. No rotary embedding: leaves them empty.
/// Throws std::bad_alloc (Engine::create turns it into a Status).
void build_rope_tables(const LayerConfig& config, EngineState& st);

/// Rotates every query head and key head of the call's new rows in the activations, row t
/// of a sequence at position kv_len - new_tokens + t.
void apply_rope(const EngineState& st, const Workspace& ws,
                std::span<const SequenceCall> sequences);

}  // namespace attn::detail
