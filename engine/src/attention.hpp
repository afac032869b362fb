// Scheduling of the attention kernels over (batch, head, q-block) and (session, head, chunk)
// tasks; shared by forward() and the KV-cache sessions.
#pragma once

#include <cstddef>

#include "attn/status.hpp"
#include "engine_state.hpp"

namespace attn::detail {

/// Where one operand lives: element (b, h, row, d) is at
/// base + b * batch_stride + h * head_stride + row * ld + d.
struct Operand {
  float* base = nullptr;
  std::ptrdiff_t ld = 0;
  std::ptrdiff_t head_stride = 0;
  std::ptrdiff_t batch_stride = 0;

  float* at(std::size_t b, std::size_t h) const noexcept {
    return base + static_cast<std::ptrdiff_t>(b) * batch_stride + static_cast<std::ptrdiff_t>(h) * head_stride;
  }
};

/// Attention of `batch` independent sequences: seq_len_q queries against seq_len_kv keys
/// each (causal alignment bottom-right), every head.
struct AttentionJob {
  Operand q, k, v, out;
  std::size_t batch = 0;
  std::size_t seq_len_q = 0;
  std::size_t seq_len_kv = 0;
};

/// The fused path: flash attention, one task per (batch, head, pair of q-blocks).
void run_fused_attention(const EngineState& st, Workspace& ws, const AttentionJob& job);

/// The unfused path: scores materialised per (batch, head). Allocates [seq_len_q, seq_len_kv]
/// floats per worker in ws.extra (on first use of a size).
Status run_unfused_attention(const EngineState& st, Workspace& ws, const AttentionJob& job);

/// One query per sequence (q.at(s, h) is sequence s's query for head h), against its cache.
struct DecodeJob {
  Operand q, out;
  const DecodeSequence* sequences = nullptr;
  std::size_t count = 0;
  std::size_t capacity = 0;  ///< cache rows per head
};

/// The decode path: tasks over (sequence, head, fixed chunk of kernels::kDecodeChunk keys),
/// then a merge per (sequence, head). Chunks sit at fixed key positions, so the result does
/// not depend on the thread count. Uses ws.extra for the partial results.
Status run_decode(const EngineState& st, Workspace& ws, const DecodeJob& job);

}  // namespace attn::detail
