// The pipeline every entry point runs (see plan.hpp): project Q/K/V, append K/V to caches,
// attend, project the output.
#include <chrono>
#include <cstring>
#include <span>

#include "attention.hpp"
#include "cache_pool.hpp"
#include "engine_state.hpp"
#include "plan.hpp"
#include "projection.hpp"
#include "rope.hpp"
#include "session_state.hpp"

namespace attn::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

// Q, K, V of every new row into the activations: one GEMM over the call's rows (3.3 copies x:
// q = k = v = x).
void project_qkv(const EngineState& st, const Workspace& ws, const float* x, std::size_t tokens) {
  const LayerConfig& c = st.config;
  float* act = ws.activations.data();
  if (c.has_projections()) {
    run_linear(st, ws, st.qkv, x, c.d_in, tokens, act,
               static_cast<std::ptrdiff_t>(st.activation_cols));
  } else {
    std::memcpy(act, x, tokens * st.activation_cols * sizeof(float));
  }
}

// Copies the new rows' keys and values into their sequences' cache blocks (block layout
// [2][kv_heads][B][head_dim], cache_pool.hpp; the blocks were reserved before).
void append_kv(const EngineState& st, const Workspace& ws,
               std::span<const SequenceCall> sequences) {
  const std::size_t head_dim = st.head_dim;
  const std::size_t k_col = st.k_col, v_col = st.v_col;
  const std::size_t row_bytes = head_dim * sizeof(float);
  for (const SequenceCall& s : sequences) {
    if (s.cache == nullptr) continue;
    const std::size_t b = s.cache->pool->block_positions;
    const std::size_t first_position = s.kv_len - s.new_tokens;
    for (std::size_t t = 0; t < s.new_tokens; ++t) {
      const float* row = ws.activations.data() + (s.first_row + t) * st.activation_cols;
      const std::size_t p = first_position + t;
      float* block = const_cast<float*>(s.cache->block_ptrs[p / b]);
      for (std::size_t h = 0; h < st.kv_heads; ++h) {
        const std::size_t k_at = (h * b + p % b) * head_dim;
        const std::size_t v_at = ((st.kv_heads + h) * b + p % b) * head_dim;
        std::memcpy(block + k_at, row + k_col + h * head_dim, row_bytes);
        std::memcpy(block + v_at, row + v_col + h * head_dim, row_bytes);
      }
    }
  }
}

}  // namespace

Call::Call(const EngineState& st) noexcept : st_(st), ws_(st.pool.acquire()) {}

Status Call::reserve(std::size_t sequences) {
  if (!ws_) return out_of_memory("a workspace", sizeof(Workspace));
  try {
    if (ws_->sequences.size() < sequences) ws_->sequences.resize(sequences);
  } catch (const std::bad_alloc&) {
    return out_of_memory("the call's sequence list", mul_or_max(sequences, sizeof(SequenceCall)));
  }
  count_ = 0;
  tokens_ = 0;
  return {};
}

void Call::add(const SequenceCall& sequence) noexcept {
  ws_->sequences[count_++] = sequence;
  tokens_ += sequence.new_tokens;
}

Status Call::run(const float* x, float* out, AttentionPath path, StepStats* stats) {
  const EngineState& st = st_;
  const LayerConfig& c = st.config;
  Workspace& ws = *ws_;
  const std::span<SequenceCall> sequences(ws.sequences.data(), count_);
  if (Status e = grow(ws, ws.activations, mul_or_max(tokens_, st.activation_cols), "activations",
                      st.workspace_limit());
      !e.ok()) {
    return e;
  }
  if (Status e = grow(ws, ws.scratch,
                      mul_or_max(st.worker_scratch_floats, static_cast<std::size_t>(st.workers)),
                      "kernel scratch", st.workspace_limit());
      !e.ok()) {
    return e;
  }
  // Which sequences attend as one query against their cache.
  for (SequenceCall& s : sequences) {
    s.decode = s.cache != nullptr && (path == AttentionPath::kDecode ||
                                      (path == AttentionPath::kRagged && s.new_tokens == 1));
  }
  double cache_bytes = 0;
  if (path != AttentionPath::kUnfused) {
    if (Status e = prepare_attention(st, ws, sequences, &cache_bytes); !e.ok()) return e;
  }
  // The last step that can fail before any cache is written: all or nothing over the call.
  if (Status e = reserve_blocks(sequences); !e.ok()) return e;
  const auto t0 = Clock::now();
  project_qkv(st, ws, x, tokens_);
  const auto t1 = Clock::now();

  apply_rope(st, ws, sequences);
  append_kv(st, ws, sequences);
  // Heads write straight into `out`, or in place over Q when out_proj follows.
  AttentionIo io;
  io.activations = ws.activations.data();
  io.out = c.has_out_proj() ? io.activations : out;
  io.ld_out = c.has_out_proj() ? static_cast<std::ptrdiff_t>(st.activation_cols) : c.d_out;
  if (path == AttentionPath::kUnfused) {
    // Only forward() takes this path: no cache, nothing to undo.
    if (Status e = run_unfused_attention(st, ws, sequences, io); !e.ok()) return e;
  } else {
    run_attention(st, ws, sequences, io);
  }
  const auto t2 = Clock::now();

  if (c.has_out_proj()) {
    run_linear(st, ws, st.out_proj, io.activations, static_cast<std::ptrdiff_t>(st.activation_cols),
               tokens_, out, c.d_out);
  }
  for (const SequenceCall& s : sequences) {
    if (s.cache != nullptr) s.cache->position = static_cast<std::int64_t>(s.kv_len);
  }
  if (stats != nullptr) {
    stats->projection_ns = ns_between(t0, t1) + ns_between(t2, Clock::now());
    stats->attention_ns = ns_between(t1, t2);
    stats->cache_bytes_read = cache_bytes;
  }
  return {};
}

}  // namespace attn::detail
