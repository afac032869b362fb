// KV-cache sessions: prefill once, then one token at a time.
#include "attn/engine.hpp"
#include "engine_state.hpp"

namespace attn {

struct SessionState {
  std::shared_ptr<const EngineState> engine;
  std::int64_t position = 0;
};

Session::Session(std::unique_ptr<SessionState> state) : state_(std::move(state)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

Result<Session> Engine::new_session() const {
  return Status(ErrorCode::kUnsupported, "KV-cache sessions are not implemented yet (issue 8)");
}

Status Engine::step(std::span<Session* const>, ConstTensorView, TensorView) const {
  return Status(ErrorCode::kUnsupported, "KV-cache sessions are not implemented yet (issue 8)");
}

Status Session::prefill(ConstTensorView, TensorView) { return {ErrorCode::kUnsupported, "not implemented"}; }
Status Session::step(ConstTensorView, TensorView) { return {ErrorCode::kUnsupported, "not implemented"}; }
void Session::reset() noexcept { state_->position = 0; }
std::int64_t Session::position() const noexcept { return state_->position; }
std::int64_t Session::capacity() const noexcept { return state_->engine->config.context_length; }
std::size_t Session::cache_bytes() const noexcept { return 0; }

}  // namespace attn
