// The engine's entry points: create, forward and the batched step, each lowered to a Call
// (plan.hpp); sessions are created here and advanced in session.cpp.
#include "attn/engine.hpp"

#include <cmath>
#include <new>
#include <string>

#include "attn/runtime.hpp"
#include "cache_pool.hpp"
#include "engine_state.hpp"
#include "kernels/kernels.hpp"
#include "kernels/visibility.hpp"
#include "plan.hpp"
#include "rope.hpp"
#include "session_state.hpp"
#include "shapes.hpp"

namespace attn {

Engine::Engine(std::shared_ptr<const EngineState> state) : state_(std::move(state)) {}

Result<Engine> Engine::create(const LayerConfig& config, const Weights& weights,
                              const RunOptions& options) {
  try {
    if (Status s = validate(config, weights); !s.ok()) return s;
    if (Status s = validate(options); !s.ok()) return s;
    Result<Isa> isa = resolve_isa(options.isa);
    if (!isa.ok()) return isa.status();
    auto st = std::make_shared<EngineState>();
    st->config = config;
    st->options = options;
    st->isa = *kernels::from_public(*isa);
    const detail::LinearKind wtype = detail::linear_kind(st->isa, options);
    st->kv_type = detail::kv_type_of(options.kv_dtype);
    Result<std::unique_ptr<detail::Scheduler>> sched =
        detail::make_scheduler(options.backend, options.threads);
    if (!sched.ok()) return sched.status();
    st->scheduler = std::move(sched.value());
    st->workers = st->scheduler->workers();
    st->causal = config.causal();
    st->head_dim = static_cast<std::size_t>(config.resolved_head_dim());
    st->num_heads = static_cast<std::size_t>(config.num_heads);
    st->kv_heads = static_cast<std::size_t>(config.kv_heads());
    st->q_dim = static_cast<std::size_t>(config.q_dim());
    st->kv_dim = static_cast<std::size_t>(config.kv_dim());
    st->scale = static_cast<float>(config.resolved_scale());
    detail::build_rope_tables(config, *st);
    st->softcap = static_cast<float>(config.softcap);
    if (config.alibi) {
      for (double slope : alibi_slopes(config.num_heads))
        st->alibi_slopes.push_back(static_cast<float>(slope));
    }
    if (config.has_projections()) {
      const auto& w = weights;
      const auto names = {"w_query", "w_key", "w_value"};
      Status s = config.qkv_bias
                     ? detail::pack_linear(st->isa, wtype, {&w.w_query, &w.w_key, &w.w_value},
                                           {&w.b_query, &w.b_key, &w.b_value}, st->qkv, names)
                     : detail::pack_linear(st->isa, wtype, {&w.w_query, &w.w_key, &w.w_value}, {},
                                           st->qkv, names);
      if (!s.ok()) return s;
      st->activation_cols = st->q_dim + 2 * st->kv_dim;
      st->k_col = st->q_dim;
      st->v_col = st->q_dim + st->kv_dim;
    } else {
      st->activation_cols = static_cast<std::size_t>(config.d_in);  // q = k = v = x
    }
    if (config.has_out_proj()) {
      Status s =
          weights.b_out.empty()
              ? detail::pack_linear(st->isa, wtype, {&weights.w_out}, {}, st->out_proj, {"w_out"})
              : detail::pack_linear(st->isa, wtype, {&weights.w_out}, {&weights.b_out},
                                    st->out_proj, {"w_out"});
      if (!s.ok()) return s;
    }
    st->worker_scratch_floats = detail::round_up_floats(std::max(
        {kernels::gemm_scratch_floats(st->isa), kernels::gemm_dot_scratch_floats(),
         kernels::flash_attention_scratch_floats(st->isa, st->head_dim), std::size_t{16}}));
    return Engine(std::move(st));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kResourceExhausted, "out of memory while creating the engine");
  }
}

Status Engine::forward(ConstTensorView x, TensorView out, AttentionImpl impl) const {
  const EngineState& st = *state_;
  Result<detail::BatchShape> shape = detail::check_input(st.config, x);
  if (!shape.ok()) return shape.status();
  if (Status s = detail::check_output(out, shape->output_shape(st.config.d_out)); !s.ok()) return s;
  const auto batch = static_cast<std::size_t>(shape->batch);
  const auto seq_len = static_cast<std::size_t>(shape->seq_len);

  // One sequence per batch item, its keys and values only in the call's activations.
  detail::Call call(st);
  if (Status s = call.reserve(batch); !s.ok()) return s;
  for (std::size_t b = 0; b < batch; ++b) {
    call.add({.first_row = b * seq_len, .new_tokens = seq_len, .kv_len = seq_len});
  }
  return call.run(x.data, out.data,
                  impl == AttentionImpl::kUnfused ? detail::AttentionPath::kUnfused
                                                  : detail::AttentionPath::kFlash);
}

namespace {

Status check_causal(const EngineState& st) {
  const LayerConfig& c = st.config;
  if (st.causal) return {};
  return Status(ErrorCode::kInvalidArgument,
                std::string("KV-cache sessions need causal attention (variant ") +
                    to_string(c.variant) + " with mask " + to_string(c.mask) +
                    " lets every token see later tokens)");
}

}  // namespace

Result<Session> Engine::make_session(std::shared_ptr<CachePoolState> pool,
                                     bool private_pool) const {
  auto st = std::unique_ptr<SessionState>(new (std::nothrow) SessionState());
  if (!st) return detail::out_of_memory("a session", sizeof(SessionState));
  st->engine = state_;
  st->private_pool = private_pool;
  // Room for a table of context_length positions, so that growing never allocates.
  const std::size_t table =
      blocks_for(static_cast<std::size_t>(state_->config.context_length), pool->block_positions);
  try {
    st->blocks.reserve(table);
    st->block_ptrs.reserve(table);
  } catch (const std::bad_alloc&) {
    return detail::out_of_memory("a session's block table",
                                 detail::mul_or_max(table, sizeof(std::uint32_t) + sizeof(void*)));
  }
  st->pool = std::move(pool);
  return Session(std::move(st));
}

Result<Session> Engine::new_session() const {
  if (Status e = check_causal(*state_); !e.ok()) return e;
  const std::size_t blocks =
      blocks_for(static_cast<std::size_t>(state_->config.context_length), kernels::kPageMultiple);
  Result<std::shared_ptr<CachePoolState>> pool =
      make_pool(state_->kv_heads, state_->head_dim, state_->kv_type, blocks);
  if (!pool.ok()) return pool.status();
  return make_session(std::move(pool.value()), /*private_pool=*/true);
}

Result<Session> Engine::new_session(CachePool& pool) const {
  if (Status e = check_causal(*state_); !e.ok()) return e;
  const CachePoolState& p = *pool.state_;
  if (p.kv_heads != state_->kv_heads || p.head_dim != state_->head_dim ||
      p.kv_type != state_->kv_type) {
    return Status(ErrorCode::kInvalidArgument,
                  "new_session: the cache pool holds " + std::to_string(p.kv_heads) +
                      " kv heads of head_dim " + std::to_string(p.head_dim) + " in " +
                      kv_type_name(p.kv_type) + ", this engine's cache has " +
                      std::to_string(state_->kv_heads) + " kv heads of head_dim " +
                      std::to_string(state_->head_dim) + " in " + kv_type_name(state_->kv_type));
  }
  return make_session(pool.state_, /*private_pool=*/false);
}

const LayerConfig& Engine::config() const noexcept { return state_->config; }
const RunOptions& Engine::options() const noexcept { return state_->options; }
const char* Engine::isa() const noexcept { return kernels::isa_name(state_->isa); }
int Engine::threads() const noexcept { return state_->workers; }

std::size_t Engine::weight_bytes() const noexcept {
  return (state_->qkv.packed.capacity() + state_->out_proj.packed.capacity() +
          state_->qkv.bias.size() + state_->out_proj.bias.size()) *
         sizeof(float);
}

Cost Engine::forward_cost(std::int64_t batch, std::int64_t seq_len) const noexcept {
  const EngineState& st = *state_;
  const LayerConfig& c = st.config;
  const double b = static_cast<double>(batch), t = static_cast<double>(seq_len);
  const double d_in = static_cast<double>(c.d_in), d_out = static_cast<double>(c.d_out);
  Cost cost;
  const double q_dim = static_cast<double>(st.q_dim), kv_dim = static_cast<double>(st.kv_dim);
  if (c.has_projections()) cost.projection_flops += 2.0 * b * t * d_in * (q_dim + 2.0 * kv_dim);
  if (c.has_out_proj()) cost.projection_flops += 2.0 * b * t * q_dim * d_out;
  const double pairs =
      kernels::visible_pairs(static_cast<std::size_t>(seq_len), static_cast<std::size_t>(seq_len),
                             st.causal, static_cast<std::size_t>(c.window));
  cost.attention_flops =
      4.0 * static_cast<double>(st.head_dim) * pairs * b * static_cast<double>(c.num_heads);
  cost.flops = cost.projection_flops + cost.attention_flops;
  cost.bytes = 4.0 * (b * t * (d_in + d_out)) + static_cast<double>(weight_bytes());
  return cost;
}

}  // namespace attn
