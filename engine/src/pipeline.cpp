// The pipeline every entry point runs (see plan.hpp): project Q/K/V, append K/V to caches,
// attend, project the output.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "attention.hpp"
#include "cache_pool.hpp"
#include "engine_state.hpp"
#include "kernels/half.hpp"
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

// One row of head_dim values stored in the cache's element type: f32 copied; bf16 and f16
// rounded to nearest even, a finite value beyond the type's range saturating to its largest
// finite value (never Inf), NaN and Inf kept; int8 symmetric, scale = max|x| / 127 over the
// row and x / scale rounded to nearest (a row of zeros: scale 0), a row holding NaN or Inf
// stored as scale NaN (every element then reads NaN). docs/precision.md has the errors.
void store_row(kernels::KvType type, const float* x, std::size_t n, void* dst, float* scale) {
  switch (type) {
    case kernels::KvType::kF32:
      std::memcpy(dst, x, n * sizeof(float));
      return;
    case kernels::KvType::kBf16:
    case kernels::KvType::kF16: {
      const bool bf16 = type == kernels::KvType::kBf16;
      const std::uint16_t largest = bf16 ? 0x7F7Fu : 0x7BFFu;  // the largest finite magnitude
      auto* out = static_cast<std::uint16_t*>(dst);
      for (std::size_t d = 0; d < n; ++d) {
        const kernels::Narrowed r = bf16 ? kernels::f32_to_bf16(x[d]) : kernels::f32_to_f16(x[d]);
        out[d] = r.overflow ? static_cast<std::uint16_t>((r.bits & 0x8000u) | largest) : r.bits;
      }
      return;
    }
    case kernels::KvType::kInt8: {
      auto* out = static_cast<std::int8_t*>(dst);
      float amax = 0;
      bool finite = true;
      for (std::size_t d = 0; d < n; ++d) {
        finite = finite && std::isfinite(x[d]);
        amax = std::max(amax, std::fabs(x[d]));
      }
      if (!finite) {
        *scale = std::numeric_limits<float>::quiet_NaN();
        std::memset(out, 0, n);
        return;
      }
      *scale = amax / 127.0f;
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      for (std::size_t d = 0; d < n; ++d) {
        const float q = std::nearbyint(x[d] * inv);
        out[d] = static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
      }
      return;
    }
  }
}

// Stores the new rows' keys and values into their sequences' cache blocks (block layout
// [2][kv_heads][B][head_dim] elements, then int8's scales, cache_pool.hpp; the blocks were
// reserved before).
void append_kv(const EngineState& st, const Workspace& ws,
               std::span<const SequenceCall> sequences) {
  const std::size_t head_dim = st.head_dim;
  const std::size_t k_col = st.k_col, v_col = st.v_col;
  const std::size_t elem = kernels::kv_type_bytes(st.kv_type);
  for (const SequenceCall& s : sequences) {
    if (s.cache == nullptr) continue;
    const CachePoolState& pool = *s.cache->pool;
    const std::size_t b = pool.block_positions;
    const std::size_t first_position = s.kv_len - s.new_tokens;
    for (std::size_t t = 0; t < s.new_tokens; ++t) {
      const float* row = ws.activations.data() + (s.first_row + t) * st.activation_cols;
      const std::size_t p = first_position + t;
      auto* block = static_cast<unsigned char*>(const_cast<void*>(s.cache->block_ptrs[p / b]));
      auto* scales = reinterpret_cast<float*>(block + pool.scale_offset);
      for (std::size_t h = 0; h < st.kv_heads; ++h) {
        const std::size_t k_row = h * b + p % b, v_row = (st.kv_heads + h) * b + p % b;
        store_row(st.kv_type, row + k_col + h * head_dim, head_dim, block + k_row * head_dim * elem,
                  scales + k_row);
        store_row(st.kv_type, row + v_col + h * head_dim, head_dim, block + v_row * head_dim * elem,
                  scales + v_row);
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
