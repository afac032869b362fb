// KV-cache sessions: prefill, one token at a time, and the batched step over many sessions;
// each validates its arguments and lowers to a Call (plan.hpp).
#include <string>

#include "attn/engine.hpp"
#include "engine_state.hpp"
#include "plan.hpp"
#include "session_state.hpp"
#include "shapes.hpp"

namespace attn {
namespace {

Status invalid(std::string message) { return {ErrorCode::kInvalidArgument, std::move(message)}; }

// Checks x: [tokens, d_in] (rank 2) and out: [tokens, d_out].
Status check_rows(const LayerConfig& c, ConstTensorView x, TensorView out, std::int64_t tokens,
                  const char* what) {
  if (x.shape.rank() != 2 || x.shape[0] != tokens || x.shape[1] != c.d_in) {
    return invalid(std::string(what) + ": x has shape " + x.shape.to_string() + ", expected [" +
                   std::to_string(tokens) + ", " + std::to_string(c.d_in) + "]");
  }
  if (x.data == nullptr) return invalid(std::string(what) + ": x has no data");
  return detail::check_output(out, Shape{tokens, c.d_out});
}

}  // namespace

Session::Session(std::unique_ptr<SessionState> state) : state_(std::move(state)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

Status Session::prefill(ConstTensorView x, TensorView out) {
  SessionState& s = *state_;
  const EngineState& st = *s.engine;
  const LayerConfig& c = st.config;
  if (x.shape.rank() != 2) {
    return invalid("prefill: x must be [seq_len, d_in], got shape " + x.shape.to_string());
  }
  const std::int64_t seq_len = x.shape[0];
  if (seq_len < 1)
    return invalid("prefill: seq_len = " + std::to_string(seq_len) + " must be >= 1");
  if (Status e = check_rows(c, x, out, seq_len, "prefill"); !e.ok()) return e;
  if (seq_len > c.context_length - s.position) {  // position <= context_length: no overflow
    return Status(ErrorCode::kOutOfRange,
                  "prefill: position " + std::to_string(s.position) + " + seq_len " +
                      std::to_string(seq_len) +
                      " exceeds context_length = " + std::to_string(c.context_length));
  }
  const auto n = static_cast<std::size_t>(seq_len);
  detail::Call call(st);
  if (Status e = call.reserve(1); !e.ok()) return e;
  call.add({.first_row = 0,
            .new_tokens = n,
            .kv_len = static_cast<std::size_t>(s.position) + n,
            .cache = &s});
  return call.run(x.data, out.data, detail::AttentionPath::kFlash);
}

Status Session::step(ConstTensorView x, TensorView out, StepStats* stats) {
  Session* self = this;
  return Engine::step_sessions(*state_->engine, std::span<Session* const>(&self, 1), x, out, stats);
}

Status Engine::step(std::span<Session* const> sessions, ConstTensorView x, TensorView out,
                    StepStats* stats) const {
  return step_sessions(*state_, sessions, x, out, stats);
}

Status Engine::step_sessions(const EngineState& st, std::span<Session* const> sessions,
                             ConstTensorView x, TensorView out, StepStats* stats) {
  const LayerConfig& c = st.config;
  const std::size_t n = sessions.size();
  if (n == 0) return invalid("step: no sessions given");
  if (Status e = check_rows(c, x, out, static_cast<std::int64_t>(n), "step"); !e.ok()) return e;
  for (std::size_t i = 0; i < n; ++i) {
    const Session* s = sessions[i];
    if (s == nullptr || !s->state_)
      return invalid("step: session " + std::to_string(i) + " is null or moved-from");
    if (s->state_->engine.get() != &st) {
      return invalid("step: session " + std::to_string(i) + " belongs to another engine");
    }
    if (s->state_->position >= c.context_length) {
      return Status(ErrorCode::kOutOfRange,
                    "step: session " + std::to_string(i) + " is full (position " +
                        std::to_string(s->state_->position) + " = context_length)");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (sessions[j] == s) {
        return invalid("step: sessions " + std::to_string(j) + " and " + std::to_string(i) +
                       " are the same session");
      }
    }
  }
  // One sequence per session, one new token each (row i of x for sessions[i]).
  detail::Call call(st);
  if (Status e = call.reserve(n); !e.ok()) return e;
  for (std::size_t i = 0; i < n; ++i) {
    SessionState* s = sessions[i]->state_.get();
    call.add({.first_row = i,
              .new_tokens = 1,
              .kv_len = static_cast<std::size_t>(s->position) + 1,
              .cache = s});
  }
  return call.run(x.data, out.data, detail::AttentionPath::kDecode, stats);
}

void Session::reset() noexcept { state_->position = 0; }
std::int64_t Session::position() const noexcept { return state_->position; }
std::int64_t Session::capacity() const noexcept { return state_->engine->config.context_length; }
std::size_t Session::cache_bytes() const noexcept {
  return (state_->k_cache.capacity() + state_->v_cache.capacity()) * sizeof(float);
}

}  // namespace attn
