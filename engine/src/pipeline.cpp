// The pipeline every entry point runs (see plan.hpp): project Q/K/V, append K/V to caches,
// attend, project the output.
#include <chrono>
#include <cstring>
#include <span>

#include "attention.hpp"
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

// Copies the new rows' keys and values into their sequences' caches
// ([kv_heads, context_length, head_dim] each).
void append_kv(const EngineState& st, const Workspace& ws,
               std::span<const SequenceCall> sequences) {
  const std::size_t head_dim = st.head_dim;
  const std::size_t context_length = static_cast<std::size_t>(st.config.context_length);
  const std::size_t k_col = st.k_col, v_col = st.v_col;
  const std::size_t row_bytes = head_dim * sizeof(float);
  for (const SequenceCall& s : sequences) {
    if (s.cache == nullptr) continue;
    const std::size_t first_position = s.kv_len - s.new_tokens;
    for (std::size_t t = 0; t < s.new_tokens; ++t) {
      const float* row = ws.activations.data() + (s.first_row + t) * st.activation_cols;
      for (std::size_t h = 0; h < st.kv_heads; ++h) {
        const std::size_t at = (h * context_length + first_position + t) * head_dim;
        std::memcpy(s.cache->k_cache.data() + at, row + k_col + h * head_dim, row_bytes);
        std::memcpy(s.cache->v_cache.data() + at, row + v_col + h * head_dim, row_bytes);
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
  double cache_bytes = 0;
  switch (path) {
    case AttentionPath::kFlash:
      run_flash_attention(st, ws, sequences, io);
      break;
    case AttentionPath::kUnfused:
      if (Status e = run_unfused_attention(st, ws, sequences, io); !e.ok()) return e;
      break;
    case AttentionPath::kDecode:
      if (Status e = run_decode(st, ws, sequences, io, &cache_bytes); !e.ok()) return e;
      break;
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
