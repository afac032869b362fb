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

/// Flash attention, one task per (sequence, head, pair of q-blocks i and n-1-i).
void run_flash_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                         const AttentionIo& io);

/// Scores materialised per (sequence, head). Allocates [new_tokens, kv_len] floats per worker
/// in ws.extra (on first use of a size).
Status run_unfused_attention(const EngineState& st, Workspace& ws,
                             std::span<SequenceCall> sequences, const AttentionIo& io);

/// One query per sequence against its cache: tasks over (sequence, head, fixed chunk of
/// kernels::kDecodeChunk keys), then a merge per (sequence, head) in chunk order, so the
/// result does not depend on the thread count. Uses ws.extra for the partial results.
/// `cache_bytes` receives the bytes of keys and values read.
Status run_decode(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                  const AttentionIo& io, double* cache_bytes);

}  // namespace attn::detail
