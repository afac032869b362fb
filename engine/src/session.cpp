// KV-cache sessions: prefill once, then one token at a time (one or many sequences).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <string>

#include "attention.hpp"
#include "attn/engine.hpp"
#include "engine_state.hpp"
#include "shapes.hpp"

namespace attn {

struct SessionState {
  std::shared_ptr<const EngineState> engine;
  detail::AlignedBuffer k_cache;  // [num_heads, context_length, head_dim]
  detail::AlignedBuffer v_cache;
  std::int64_t position = 0;
};

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t elapsed_ns(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
}

Status invalid(std::string message) { return {ErrorCode::kInvalidArgument, std::move(message)}; }

// Checks x: [tokens, d_in] (rank 2) and out: [tokens, d_out].
Status check_rows(const Config& c, ConstTensorView x, TensorView out, std::int64_t tokens, const char* what) {
  if (x.shape.rank() != 2 || x.shape[0] != tokens || x.shape[1] != c.d_in) {
    return invalid(std::string(what) + ": x has shape " + x.shape.to_string() + ", expected [" +
                   std::to_string(tokens) + ", " + std::to_string(c.d_in) + "]");
  }
  if (x.data == nullptr) return invalid(std::string(what) + ": x has no data");
  return detail::check_output(out, Shape{tokens, c.d_out});
}

// Computes Q, K, V of `tokens` new rows into ws.activations and appends K, V of row i to
// sequence i's cache at `positions[i]` (or all rows to one cache from positions[0]).
void project_and_append(const EngineState& st, detail::Workspace& ws, const float* x, std::size_t tokens,
                        SessionState* const* sessions, bool one_sequence) {
  const Config& c = st.config;
  float* act = ws.activations.data();
  const auto ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  if (c.has_projections()) {
    detail::run_linear(st, ws, st.qkv, x, c.d_in, tokens, act, ld);
  } else {
    std::memcpy(act, x, tokens * st.activation_cols * sizeof(float));
  }
  const std::size_t heads = static_cast<std::size_t>(c.num_heads), hd = st.head_dim;
  const std::size_t cap = static_cast<std::size_t>(c.context_length);
  const std::size_t k_off = c.has_projections() ? static_cast<std::size_t>(c.d_out) : 0;
  const std::size_t v_off = c.has_projections() ? 2 * static_cast<std::size_t>(c.d_out) : 0;
  for (std::size_t t = 0; t < tokens; ++t) {
    SessionState& s = *sessions[one_sequence ? 0 : t];
    const std::size_t pos = static_cast<std::size_t>(s.position) + (one_sequence ? t : 0);
    const float* row = act + static_cast<std::ptrdiff_t>(t) * ld;
    for (std::size_t h = 0; h < heads; ++h) {
      std::memcpy(s.k_cache.data() + (h * cap + pos) * hd, row + k_off + h * hd, hd * sizeof(float));
      std::memcpy(s.v_cache.data() + (h * cap + pos) * hd, row + v_off + h * hd, hd * sizeof(float));
    }
  }
}

std::size_t window_begin(const Config& c, std::size_t kv_end) {
  const auto w = static_cast<std::size_t>(c.window);
  return (w > 0 && kv_end > w) ? kv_end - w : 0;
}

}  // namespace

Session::Session(std::unique_ptr<SessionState> state) : state_(std::move(state)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

Result<Session> Engine::new_session() const {
  const Config& c = state_->config;
  if (!c.causal) {
    return Status(ErrorCode::kInvalidArgument,
                  "KV-cache sessions need causal attention (config.causal is false: every token "
                  "would see later tokens)");
  }
  auto st = std::unique_ptr<SessionState>(new (std::nothrow) SessionState());
  if (!st) return detail::out_of_memory("a session", 0);
  st->engine = state_;
  const std::size_t floats = detail::mul_or_max(static_cast<std::size_t>(c.d_out), static_cast<std::size_t>(c.context_length));
  if (!st->k_cache.reserve(floats) || !st->v_cache.reserve(floats)) {
    return detail::out_of_memory("the key/value cache", 2 * floats);
  }
  return Session(std::move(st));
}

Status Session::prefill(ConstTensorView x, TensorView out) {
  SessionState& s = *state_;
  const EngineState& st = *s.engine;
  const Config& c = st.config;
  if (x.shape.rank() != 2) {
    return invalid("prefill: x must be [seq_len, d_in], got shape " + x.shape.to_string());
  }
  const std::int64_t tokens = x.shape[0];
  if (tokens < 1) return invalid("prefill: seq_len = " + std::to_string(tokens) + " must be >= 1");
  if (Status e = check_rows(c, x, out, tokens, "prefill"); !e.ok()) return e;
  if (tokens > c.context_length - s.position) {  // position <= context_length: no overflow
    return Status(ErrorCode::kOutOfRange, "prefill: position " + std::to_string(s.position) + " + seq_len " +
                                              std::to_string(tokens) + " exceeds context_length = " +
                                              std::to_string(c.context_length));
  }
  detail::WorkspacePool::Lease ws = st.pool.acquire();
  const std::size_t n = static_cast<std::size_t>(tokens);
  if (!ws) return detail::out_of_memory("a workspace", 0);
  if (Status e = detail::prepare(st, *ws, n); !e.ok()) return e;
  SessionState* self = &s;
  project_and_append(st, *ws, x.data, n, &self, /*one_sequence=*/true);

  const std::size_t cap = static_cast<std::size_t>(c.context_length), hd = st.head_dim;
  const auto ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  detail::AttentionJob job;
  job.batch = 1;
  job.seq_len_q = n;
  job.seq_len_kv = static_cast<std::size_t>(s.position) + n;
  job.q = {ws->activations.data(), ld, static_cast<std::ptrdiff_t>(hd), 0};
  job.k = {s.k_cache.data(), static_cast<std::ptrdiff_t>(hd), static_cast<std::ptrdiff_t>(cap * hd), 0};
  job.v = {s.v_cache.data(), static_cast<std::ptrdiff_t>(hd), static_cast<std::ptrdiff_t>(cap * hd), 0};
  job.out = c.has_out_proj() ? job.q : detail::Operand{out.data, c.d_out, static_cast<std::ptrdiff_t>(hd), 0};
  detail::run_fused_attention(st, *ws, job);
  if (c.has_out_proj()) detail::run_linear(st, *ws, st.out_proj, ws->activations.data(), ld, n, out.data, c.d_out);
  s.position += tokens;
  return {};
}

Status Session::step(ConstTensorView x, TensorView out, StepStats* stats) {
  Session* self = this;
  return Engine(state_->engine).step(std::span<Session* const>(&self, 1), x, out, stats);
}

Status Engine::step(std::span<Session* const> sessions, ConstTensorView x, TensorView out, StepStats* stats) const {
  const EngineState& st = *state_;
  const Config& c = st.config;
  const std::size_t n = sessions.size();
  if (n == 0) return invalid("step: no sessions given");
  if (Status e = check_rows(c, x, out, static_cast<std::int64_t>(n), "step"); !e.ok()) return e;
  for (std::size_t i = 0; i < n; ++i) {
    const Session* s = sessions[i];
    if (s == nullptr || !s->state_) return invalid("step: session " + std::to_string(i) + " is null or moved-from");
    if (s->state_->engine != state_) return invalid("step: session " + std::to_string(i) + " belongs to another engine");
    if (s->state_->position >= c.context_length) {
      return Status(ErrorCode::kOutOfRange, "step: session " + std::to_string(i) + " is full (position " +
                                                std::to_string(s->state_->position) + " = context_length)");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (sessions[j] == s) {
        return invalid("step: sessions " + std::to_string(j) + " and " + std::to_string(i) + " are the same session");
      }
    }
  }
  const auto t0 = Clock::now();
  detail::WorkspacePool::Lease ws = st.pool.acquire();
  if (!ws) return detail::out_of_memory("a workspace", 0);
  if (Status e = detail::prepare(st, *ws, n); !e.ok()) return e;
  if (!ws->reserve_sequences(n)) return detail::out_of_memory("step bookkeeping", n);
  SessionState** states = ws->session_states.data();
  for (std::size_t i = 0; i < n; ++i) states[i] = sessions[i]->state_.get();
  project_and_append(st, *ws, x.data, n, states, /*one_sequence=*/false);
  const auto t1 = Clock::now();

  const std::size_t cap = static_cast<std::size_t>(c.context_length), hd = st.head_dim;
  const auto ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  double bytes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t end = static_cast<std::size_t>(states[i]->position) + 1;
    detail::DecodeSequence& seq = ws->sequences[i];
    seq = {states[i]->k_cache.data(), states[i]->v_cache.data(), window_begin(c, end), end};
    bytes += 2.0 * static_cast<double>((seq.kv_end - seq.kv_begin) * hd * sizeof(float)) * static_cast<double>(c.num_heads);
  }
  detail::DecodeJob job;
  job.q = {ws->activations.data(), ld, static_cast<std::ptrdiff_t>(hd), ld};
  job.out = c.has_out_proj() ? job.q : detail::Operand{out.data, c.d_out, static_cast<std::ptrdiff_t>(hd), c.d_out};
  job.sequences = ws->sequences.data();
  job.count = n;
  job.capacity = cap;
  if (Status e = detail::run_decode(st, *ws, job); !e.ok()) return e;  // before any position moves
  const auto t2 = Clock::now();
  if (c.has_out_proj()) detail::run_linear(st, *ws, st.out_proj, ws->activations.data(), ld, n, out.data, c.d_out);
  for (std::size_t i = 0; i < n; ++i) ++states[i]->position;
  if (stats != nullptr) {
    stats->projection_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count() + elapsed_ns(t2);
    stats->attention_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t2 - t1).count();
    stats->cache_bytes_read = bytes;
  }
  return {};
}

void Session::reset() noexcept { state_->position = 0; }
std::int64_t Session::position() const noexcept { return state_->position; }
std::int64_t Session::capacity() const noexcept { return state_->engine->config.context_length; }
std::size_t Session::cache_bytes() const noexcept {
  return (state_->k_cache.capacity() + state_->v_cache.capacity()) * sizeof(float);
}

}  // namespace attn
