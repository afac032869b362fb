// The attention stage of the pipeline: the kernels scheduled over the call's sequences.
#pragma once

#include <cstddef>
#include <span>

#include "attn/status.hpp"
#include "plan.hpp"

namespace attn::detail {

/// Where the attention stage reads Q, K, V and writes its output.
struct AttentionIo {
  float* activations = nullptr;  ///< [tokens, activation_cols]: Q at column 0, K, V after
  float* out = nullptr;          ///< heads' outputs: over Q when an output projection
                                 ///< follows, else the call's out [tokens, d_out]
  std::ptrdiff_t ld_out = 0;
};

/// Numbers the attention tasks of `sequences` (sets first_task, first_slot) and grows the
/// workspace for the decode partials; fails (nothing written) when memory runs out.
/// `cache_bytes` (optional) receives the bytes of keys and values the decode sequences read.
Status prepare_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                         double* cache_bytes);

/// Attention for every sequence after prepare_attention: the flash kernel over (head, pair of
/// q-blocks i and n-1-i), or for a sequence marked decode its one query against the cache over
/// (head or kv head, fixed chunk of kernels::kDecodeChunk keys) then a merge per head in chunk
/// order; all in one parallel pass, so the result does not depend on the thread count or on
/// which sequences share the call.
void run_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                   const AttentionIo& io);

/// Scores materialised per (sequence, head). Allocates [new_tokens, kv_len] floats per worker
/// in ws.extra (on first use of a size).
Status run_unfused_attention(const EngineState& st, Workspace& ws,
                             std::span<SequenceCall> sequences, const AttentionIo& io);

}  // namespace attn::detail
