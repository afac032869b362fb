// Engine creation and the forward pass: fused QKV projection, attention per
// (batch, head, q-block), output projection.
#include "attn/engine.hpp"

#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "attn/runtime.hpp"
#include "engine_state.hpp"
#include "shapes.hpp"

namespace attn {
namespace detail {

Status out_of_memory(const char* what, std::size_t floats) {
  return {ErrorCode::kResourceExhausted,
          std::string("cannot allocate ") + std::to_string(floats * sizeof(float)) + " bytes for " + what};
}

void run_linear(const EngineState& st, Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc) {
  const kernels::GemmBlock block = kernels::gemm_task_block(st.isa);
  const std::size_t m_tiles = (m + block.m - 1) / block.m;
  const std::size_t n_tiles = (lin.n + block.n - 1) / block.n;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t mi = t / n_tiles, ni = t % n_tiles;
      kernels::GemmArgs g;
      g.a = a + static_cast<std::ptrdiff_t>(mi * block.m) * lda;
      g.lda = lda;
      g.packed_b = lin.packed.data();
      g.n_total = lin.n;
      g.m = std::min(block.m, m - mi * block.m);
      g.k = lin.k;
      g.n0 = ni * block.n;
      g.n = std::min(block.n, lin.n - g.n0);
      g.bias = lin.bias.empty() ? nullptr : lin.bias.data();
      g.c = c + static_cast<std::ptrdiff_t>(mi * block.m) * ldc;
      g.ldc = ldc;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      kernels::gemm(st.isa, g);
    }
  };
  st.scheduler->parallel_for(m_tiles * n_tiles, 1, body);
}

}  // namespace detail

namespace {

kernels::Isa to_kernel_isa(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return kernels::Isa::kAvx512;
    case Isa::kAvx2:
      return kernels::Isa::kAvx2;
    default:
      return kernels::Isa::kSse2;
  }
}

// Packs rows of `parts` (each [rows_i, k], nn.Linear layout) stacked into one projection.
Status pack_linear(kernels::Isa isa, std::initializer_list<const Tensor*> parts,
                   std::initializer_list<const Tensor*> biases, PackedLinear& lin) {
  std::size_t n = 0;
  const std::size_t k = static_cast<std::size_t>((*parts.begin())->shape()[1]);
  for (const Tensor* p : parts) n += static_cast<std::size_t>(p->shape()[0]);
  std::vector<float> stacked;
  stacked.reserve(n * k);
  for (const Tensor* p : parts) stacked.insert(stacked.end(), p->values().begin(), p->values().end());
  const std::size_t floats = kernels::gemm_packed_floats(isa, n, k);
  if (!lin.packed.reserve(floats)) return detail::out_of_memory("packed weights", floats);
  kernels::gemm_pack_b(isa, stacked.data(), static_cast<std::ptrdiff_t>(k), 1, n, k, lin.packed.data());
  lin.n = n;
  lin.k = k;
  for (const Tensor* b : biases) lin.bias.insert(lin.bias.end(), b->values().begin(), b->values().end());
  return {};
}

// Attention over one call's activations: tasks are (batch, head, pair of q-blocks), pairing
// block i with block n-1-i so that causal tasks cost about the same.
void run_fused_attention(const EngineState& st, detail::Workspace& ws, const ActivationLayout& act,
                         std::size_t batch, std::size_t seq_len, float* out, std::ptrdiff_t ld_out) {
  const std::size_t heads = static_cast<std::size_t>(st.config.num_heads);
  const std::size_t q_block = st.mask.q_block();
  const std::size_t n_qb = (seq_len + q_block - 1) / q_block;
  const std::size_t pairs = (n_qb + 1) / 2;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t bh = t / pairs, pair = t % pairs;
      const std::size_t b = bh / heads, h = bh % heads;
      kernels::AttentionArgs a;
      const float* q = act.base + static_cast<std::ptrdiff_t>(b * seq_len) * act.ld + h * st.head_dim;
      a.q = q;
      a.ld_q = act.ld;
      a.k = q + act.k_offset;
      a.ld_k = act.ld;
      a.v = q + act.v_offset;
      a.ld_v = act.ld;
      a.out = out + static_cast<std::ptrdiff_t>(b * seq_len) * ld_out + h * st.head_dim;
      a.ld_out = ld_out;
      a.head_dim = st.head_dim;
      a.seq_len_q = seq_len;
      a.seq_len_kv = seq_len;
      a.scale = st.scale;
      a.causal = st.config.causal;
      a.window = static_cast<std::size_t>(st.config.window);
      a.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      const std::size_t blocks[2] = {pair, n_qb - 1 - pair};
      for (int i = 0; i < (blocks[0] == blocks[1] ? 1 : 2); ++i) {
        a.q_begin = blocks[i] * q_block;
        a.q_end = std::min(seq_len, a.q_begin + q_block);
        kernels::flash_attention(st.isa, a);
      }
    }
  };
  st.scheduler->parallel_for(batch * heads * pairs, 1, body);
}

// The straightforward path, one task per (batch, head): S = scale · Q Kᵀ materialised,
// masked softmax over each row, then O = P V, with the same GEMM kernel as the projections.
Status run_unfused_attention(const EngineState& st, detail::Workspace& ws, const ActivationLayout& act,
                             std::size_t batch, std::size_t seq_len, float* out, std::ptrdiff_t ld_out) {
  const kernels::Isa isa = st.isa;
  const std::size_t heads = static_cast<std::size_t>(st.config.num_heads), hd = st.head_dim;
  const std::size_t ld_s = detail::round_up_floats(seq_len);
  const std::size_t k_packed = detail::round_up_floats(kernels::gemm_packed_floats(isa, seq_len, hd));
  const std::size_t v_packed = detail::round_up_floats(kernels::gemm_packed_floats(isa, hd, seq_len));
  const std::size_t per_worker = seq_len * ld_s + k_packed + v_packed;
  if (!ws.extra.reserve(per_worker * st.workers)) return detail::out_of_memory("unfused scores", per_worker * st.workers);
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    float* s = ws.extra.data() + per_worker * worker;
    float* kp = s + seq_len * ld_s;
    float* vp = kp + k_packed;
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t b = t / heads, h = t % heads;
      const float* q = act.base + static_cast<std::ptrdiff_t>(b * seq_len) * act.ld + h * hd;
      kernels::gemm_pack_b(isa, q + act.k_offset, act.ld, 1, seq_len, hd, kp);
      kernels::gemm_pack_b(isa, q + act.v_offset, 1, act.ld, hd, seq_len, vp);
      kernels::GemmArgs g;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      g.a = q;
      g.lda = act.ld;
      g.packed_b = kp;
      g.n_total = g.n = seq_len;
      g.m = seq_len;
      g.k = hd;
      g.c = s;
      g.ldc = static_cast<std::ptrdiff_t>(ld_s);
      kernels::gemm(isa, g);
      kernels::masked_softmax_rows(isa, s, static_cast<std::ptrdiff_t>(ld_s), seq_len, seq_len, st.scale,
                                   st.config.causal, 0, static_cast<std::size_t>(st.config.window));
      g.a = s;
      g.lda = static_cast<std::ptrdiff_t>(ld_s);
      g.packed_b = vp;
      g.n_total = g.n = hd;
      g.k = seq_len;
      g.c = out + static_cast<std::ptrdiff_t>(b * seq_len) * ld_out + h * hd;
      g.ldc = ld_out;
      kernels::gemm(isa, g);
    }
  };
  st.scheduler->parallel_for(batch * heads, 1, body);
  return {};
}

}  // namespace

Engine::Engine(std::shared_ptr<const EngineState> state) : state_(std::move(state)) {}

Result<Engine> Engine::create(const Config& config, const Weights& weights) {
  try {
    if (Status s = validate(config, weights); !s.ok()) return s;
    Result<Isa> isa = resolve_isa(config.isa);
    if (!isa.ok()) return isa.status();
    auto st = std::make_shared<EngineState>();
    st->config = config;
    st->isa = to_kernel_isa(*isa);
    Result<std::unique_ptr<detail::Scheduler>> sched = detail::make_scheduler(config.backend, config.threads);
    if (!sched.ok()) return sched.status();
    st->scheduler = std::move(sched.value());
    st->workers = st->scheduler->workers();
    st->head_dim = static_cast<std::size_t>(config.head_dim());
    st->scale = config.variant == Variant::kSimplified ? 1.0f
                                                       : static_cast<float>(1.0 / std::sqrt(double(st->head_dim)));
    if (config.has_projections()) {
      Status s = config.qkv_bias
                     ? pack_linear(st->isa, {&weights.w_query, &weights.w_key, &weights.w_value},
                                   {&weights.b_query, &weights.b_key, &weights.b_value}, st->qkv)
                     : pack_linear(st->isa, {&weights.w_query, &weights.w_key, &weights.w_value}, {}, st->qkv);
      if (!s.ok()) return s;
      st->activation_cols = 3 * static_cast<std::size_t>(config.d_out);
    } else {
      st->activation_cols = static_cast<std::size_t>(config.d_in);
    }
    if (config.has_out_proj()) {
      Status s = weights.b_out.empty() ? pack_linear(st->isa, {&weights.w_out}, {}, st->out_proj)
                                       : pack_linear(st->isa, {&weights.w_out}, {&weights.b_out}, st->out_proj);
      if (!s.ok()) return s;
    }
    const std::size_t q_block = kernels::flash_attention_q_block(st->isa, st->head_dim);
    st->mask = detail::TileMask(config.causal, static_cast<std::size_t>(config.window), q_block, q_block);
    st->worker_scratch_floats = detail::round_up_floats(
        std::max({kernels::gemm_scratch_floats(st->isa),
                  kernels::flash_attention_scratch_floats(st->isa, st->head_dim), std::size_t{16}}));
    return Engine(std::move(st));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kResourceExhausted, "out of memory while creating the engine");
  }
}

Status Engine::forward(ConstTensorView x, TensorView out, AttentionImpl impl) const {
  const EngineState& st = *state_;
  const Config& c = st.config;
  Result<detail::BatchShape> shape = detail::check_input(c, x);
  if (!shape.ok()) return shape.status();
  if (Status s = detail::check_output(out, shape->output_shape(c.d_out)); !s.ok()) return s;
  const std::size_t batch = static_cast<std::size_t>(shape->batch);
  const std::size_t seq_len = static_cast<std::size_t>(shape->seq_len);
  const std::size_t tokens = batch * seq_len;

  detail::WorkspacePool::Lease ws = st.pool.acquire();
  if (!ws) return detail::out_of_memory("a workspace", 0);
  if (!ws->activations.reserve(tokens * st.activation_cols)) {
    return detail::out_of_memory("activations", tokens * st.activation_cols);
  }
  if (!ws->scratch.reserve(st.worker_scratch_floats * st.workers)) {
    return detail::out_of_memory("kernel scratch", st.worker_scratch_floats * st.workers);
  }

  ActivationLayout act;
  act.base = ws->activations.data();
  act.ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  if (c.has_projections()) {
    detail::run_linear(st, *ws, st.qkv, x.data, c.d_in, tokens, act.base, act.ld);
    act.k_offset = static_cast<std::size_t>(c.d_out);
    act.v_offset = 2 * static_cast<std::size_t>(c.d_out);
  } else {
    std::memcpy(act.base, x.data, tokens * st.activation_cols * sizeof(float));  // q = k = v = x
  }

  // Heads write straight into `out`, or in place over Q when out_proj follows.
  float* attn_out = c.has_out_proj() ? act.base : out.data;
  const std::ptrdiff_t ld_attn = c.has_out_proj() ? act.ld : static_cast<std::ptrdiff_t>(c.d_out);
  if (impl == AttentionImpl::kUnfused) {
    if (Status s = run_unfused_attention(st, *ws, act, batch, seq_len, attn_out, ld_attn); !s.ok()) return s;
  } else {
    run_fused_attention(st, *ws, act, batch, seq_len, attn_out, ld_attn);
  }

  if (c.has_out_proj()) {
    detail::run_linear(st, *ws, st.out_proj, act.base, act.ld, tokens, out.data, c.d_out);
  }
  return {};
}

const Config& Engine::config() const noexcept { return state_->config; }
const char* Engine::isa() const noexcept { return kernels::isa_name(state_->isa); }
int Engine::threads() const noexcept { return state_->workers; }

std::size_t Engine::weight_bytes() const noexcept {
  return (state_->qkv.packed.capacity() + state_->out_proj.packed.capacity() +
          state_->qkv.bias.size() + state_->out_proj.bias.size()) * sizeof(float);
}

Cost Engine::forward_cost(std::int64_t batch, std::int64_t seq_len) const noexcept {
  const Config& c = state_->config;
  const double b = static_cast<double>(batch), t = static_cast<double>(seq_len);
  const double d_in = static_cast<double>(c.d_in), d_out = static_cast<double>(c.d_out);
  Cost cost;
  if (c.has_projections()) cost.projection_flops += 2.0 * b * t * d_in * 3.0 * d_out;
  if (c.has_out_proj()) cost.projection_flops += 2.0 * b * t * d_out * d_out;
  const double pairs = state_->mask.visible_pairs(static_cast<std::size_t>(seq_len), static_cast<std::size_t>(seq_len));
  cost.attention_flops = 4.0 * static_cast<double>(state_->head_dim) * pairs * b * static_cast<double>(c.num_heads);
  cost.flops = cost.projection_flops + cost.attention_flops;
  cost.bytes = 4.0 * (b * t * (d_in + d_out)) + static_cast<double>(weight_bytes());
  return cost;
}

}  // namespace attn
