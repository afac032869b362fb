// Engine creation and the forward pass: fused QKV projection, attention per
// (batch, head, q-block), output projection.
#include "attn/engine.hpp"

#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "attn/runtime.hpp"
#include "attention.hpp"
#include "engine_state.hpp"
#include "shapes.hpp"

namespace attn {
namespace detail {

Status out_of_memory(const char* what, std::size_t floats) {
  return {ErrorCode::kResourceExhausted,
          std::string("cannot allocate ") +
              (floats > SIZE_MAX / sizeof(float) ? std::string("more than 2^64") : std::to_string(floats * sizeof(float))) +
              " bytes for " + what};
}

Status grow(const EngineState& st, Workspace& ws, AlignedBuffer& buffer, std::size_t floats, const char* what) {
  if (floats <= buffer.capacity()) return {};
  const auto limit = static_cast<std::size_t>(st.config.max_workspace_bytes);
  if (limit > 0) {
    const std::size_t others = ws.activations.bytes() + ws.scratch.bytes() + ws.extra.bytes() - buffer.bytes();
    const std::size_t bytes = mul_or_max(floats, sizeof(float));
    if (bytes > limit || others + bytes > limit) {
      // The call fails; buffers it grew before this one would count against every later
      // call and could refuse calls that fit. Free them all: the next call regrows.
      ws.activations.release();
      ws.scratch.release();
      ws.extra.release();
      return {ErrorCode::kResourceExhausted,
              std::string("this call needs ") + (bytes == SIZE_MAX ? std::string("more than 2^64") : std::to_string(bytes)) +
                  " bytes for " + what + " (the workspace would hold " +
                  (bytes == SIZE_MAX ? std::string("more") : std::to_string(others + bytes)) +
                  " bytes), over max_workspace_bytes = " + std::to_string(limit)};
    }
  }
  if (!buffer.reserve(floats)) return out_of_memory(what, floats);
  return {};
}

Status prepare(const EngineState& st, Workspace& ws, std::size_t tokens) {
  if (Status s = grow(st, ws, ws.activations, mul_or_max(tokens, st.activation_cols), "activations"); !s.ok()) return s;
  return grow(st, ws, ws.scratch, mul_or_max(st.worker_scratch_floats, static_cast<std::size_t>(st.workers)),
              "kernel scratch");
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
  if (Status s = detail::prepare(st, *ws, tokens); !s.ok()) return s;

  float* act = ws->activations.data();
  const auto ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  detail::AttentionJob job;
  job.batch = batch;
  job.seq_len_q = job.seq_len_kv = seq_len;
  job.q = {act, ld, static_cast<std::ptrdiff_t>(st.head_dim), static_cast<std::ptrdiff_t>(seq_len) * ld};
  job.k = job.v = job.q;
  if (c.has_projections()) {
    detail::run_linear(st, *ws, st.qkv, x.data, c.d_in, tokens, act, ld);
    job.k.base = act + c.d_out;
    job.v.base = act + 2 * c.d_out;
  } else {
    std::memcpy(act, x.data, tokens * st.activation_cols * sizeof(float));  // q = k = v = x
  }
  // Heads write straight into `out`, or in place over Q when out_proj follows.
  job.out = c.has_out_proj() ? job.q
                             : detail::Operand{out.data, c.d_out, static_cast<std::ptrdiff_t>(st.head_dim),
                                               static_cast<std::ptrdiff_t>(seq_len) * c.d_out};
  if (impl == AttentionImpl::kUnfused) {
    if (Status s = detail::run_unfused_attention(st, *ws, job); !s.ok()) return s;
  } else {
    detail::run_fused_attention(st, *ws, job);
  }

  if (c.has_out_proj()) {
    detail::run_linear(st, *ws, st.out_proj, act, ld, tokens, out.data, c.d_out);
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
