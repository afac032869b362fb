// KV-cache sessions: prefill, one token at a time, the batched step over many sessions and the
// ragged advance; each validates its arguments and lowers to a Call (plan.hpp). Fork and
// release of a session's blocks.
#include <cstring>
#include <new>
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

Status Engine::advance(std::span<Session* const> sessions, std::span<const std::int64_t> new_tokens,
                       ConstTensorView x, TensorView out, StepStats* stats) const {
  const EngineState& st = *state_;
  const LayerConfig& c = st.config;
  const std::size_t n = sessions.size();
  if (n == 0) return invalid("advance: no sessions given");
  if (new_tokens.size() != n) {
    return invalid("advance: " + std::to_string(n) + " sessions but " +
                   std::to_string(new_tokens.size()) + " new_tokens counts");
  }
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Session* s = sessions[i];
    if (s == nullptr || !s->state_)
      return invalid("advance: session " + std::to_string(i) + " is null or moved-from");
    if (s->state_->engine.get() != &st) {
      return invalid("advance: session " + std::to_string(i) + " belongs to another engine");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (sessions[j] == s) {
        return invalid("advance: sessions " + std::to_string(j) + " and " + std::to_string(i) +
                       " are the same session");
      }
    }
    if (new_tokens[i] < 1) {
      return invalid("advance: new_tokens[" + std::to_string(i) +
                     "] = " + std::to_string(new_tokens[i]) + " must be >= 1");
    }
    if (new_tokens[i] > c.context_length - s->state_->position) {
      return Status(ErrorCode::kOutOfRange,
                    "advance: session " + std::to_string(i) + " at position " +
                        std::to_string(s->state_->position) + " + new_tokens " +
                        std::to_string(new_tokens[i]) +
                        " exceeds context_length = " + std::to_string(c.context_length));
    }
    tokens += new_tokens[i];  // each <= context_length: no overflow for any sane n
  }
  if (Status e = check_rows(c, x, out, tokens, "advance"); !e.ok()) return e;
  detail::Call call(st);
  if (Status e = call.reserve(n); !e.ok()) return e;
  std::size_t row = 0;
  for (std::size_t i = 0; i < n; ++i) {
    SessionState* s = sessions[i]->state_.get();
    const auto m = static_cast<std::size_t>(new_tokens[i]);
    call.add({.first_row = row,
              .new_tokens = m,
              .kv_len = static_cast<std::size_t>(s->position) + m,
              .cache = s});
    row += m;
  }
  return call.run(x.data, out.data, detail::AttentionPath::kRagged, stats);
}

Result<Session> Session::fork() const {
  const SessionState& s = *state_;
  Engine engine(s.engine);
  Result<Session> child = engine.make_session(s.pool, s.private_pool);
  if (!child.ok()) return child.status();
  SessionState& c = *child->state_;
  if (s.private_pool) {
    // A private pool is sized for one session: the fork gets its own, of the same size.
    Result<std::shared_ptr<CachePoolState>> pool =
        make_pool(s.pool->kv_heads, s.pool->head_dim, s.pool->kv_type, s.pool->blocks);
    if (!pool.ok()) return pool.status();
    c.pool = std::move(pool.value());
  }
  const std::size_t b = s.pool->block_positions;
  const auto position = static_cast<std::size_t>(s.position);
  const std::size_t full = position / b, partial = blocks_for(position, b) - full;
  if (c.pool == s.pool) {
    // Full blocks are never written again: share them.
    const std::span<const std::uint32_t> shared(s.blocks.data(), full);
    s.pool->share(shared);
    for (std::uint32_t id : shared) {
      c.blocks.push_back(id);
      c.block_ptrs.push_back(s.pool->block(id));
    }
  }
  // Blocks the child writes into (or all of them, into a new private pool): copies.
  const std::size_t first_copy = c.blocks.size(), copies = full + partial - first_copy;
  if (copies > 0) {
    CachePoolState& pool = *c.pool;
    if (Status e = pool.take(copies,
                             [&](std::uint32_t id) {
                               c.blocks.push_back(id);
                               c.block_ptrs.push_back(pool.block(id));
                             });
        !e.ok()) {
      return e;  // the child's destructor gives back the shared blocks
    }
    for (std::size_t i = first_copy; i < full + partial; ++i) {
      std::memcpy(const_cast<void*>(c.block_ptrs[i]), s.block_ptrs[i], pool.block_bytes());
    }
  }
  c.position = s.position;
  return child;
}

void Session::reset() noexcept { state_->release(); }
void Session::release() noexcept {
  if (state_) state_->release();
}
std::int64_t Session::position() const noexcept { return state_->position; }
std::int64_t Session::capacity() const noexcept { return state_->engine->config.context_length; }
std::size_t Session::cache_bytes() const noexcept {
  const CachePoolState& pool = *state_->pool;
  if (state_->private_pool) return pool.blocks * pool.block_bytes();
  return state_->blocks.size() * pool.block_bytes();
}

}  // namespace attn
