// Rotary position embeddings (see rope.hpp).
#include "rope.hpp"

#include <algorithm>
#include <cmath>

#include "engine_state.hpp"

namespace attn::detail {
namespace {

// Rotates one head's first rope_dim features. neox pairs i with i + half; gptj pairs 2i with
// 2i + 1. As the Hugging Face code: out = x * cos + rotate(x) * sin, each product rounded.
void rotate(float* x, const float* cos, const float* sin, std::size_t half, Rope rope) {
  for (std::size_t i = 0; i < half; ++i) {
    const std::size_t a = rope == Rope::kNeox ? i : 2 * i;
    const std::size_t b = rope == Rope::kNeox ? i + half : 2 * i + 1;
    const float x0 = x[a], x1 = x[b];
    const float c = cos[i], s = sin[i];
    const float lo = x0 * c, lo_rot = -x1 * s;
    const float hi = x1 * c, hi_rot = x0 * s;
    x[a] = lo + lo_rot;
    x[b] = hi + hi_rot;
  }
}

}  // namespace

void build_rope_tables(const LayerConfig& config, EngineState& st) {
  st.rope_dim = static_cast<std::size_t>(config.resolved_rope_dim());
  if (st.rope_dim == 0) return;
  const std::size_t half = st.rope_dim / 2;
  const auto context_length = static_cast<std::size_t>(config.context_length);
  std::vector<float> inv_freq(half);
  const auto theta = static_cast<float>(config.rope_theta);
  for (std::size_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(st.rope_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  st.rope_cos.resize(context_length * half);
  st.rope_sin.resize(context_length * half);
  for (std::size_t p = 0; p < context_length; ++p) {
    for (std::size_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      st.rope_cos[p * half + i] = std::cos(angle);
      st.rope_sin[p * half + i] = std::sin(angle);
    }
  }
}

void apply_rope(const EngineState& st, const Workspace& ws,
                std::span<const SequenceCall> sequences) {
  if (st.rope_dim == 0 || sequences.empty()) return;
  const std::size_t half = st.rope_dim / 2;
  const Rope rope = st.config.rope;
  const std::size_t tokens = sequences.back().first_row + sequences.back().new_tokens;
  auto body = [&](std::size_t begin, std::size_t end, int) {
    for (std::size_t row = begin; row < end; ++row) {
      // The sequence of this row (sequences are in row order).
      const auto it =
          std::upper_bound(sequences.begin(), sequences.end(), row,
                           [](std::size_t r, const SequenceCall& s) { return r < s.first_row; });
      const SequenceCall& s = *(it - 1);
      const std::size_t position = s.kv_len - s.new_tokens + (row - s.first_row);
      const float* cos = st.rope_cos.data() + position * half;
      const float* sin = st.rope_sin.data() + position * half;
      float* x = ws.activations.data() + row * st.activation_cols;
      for (std::size_t h = 0; h < st.num_heads; ++h)
        rotate(x + h * st.head_dim, cos, sin, half, rope);
      for (std::size_t h = 0; h < st.kv_heads; ++h)
        rotate(x + st.k_col + h * st.head_dim, cos, sin, half, rope);
    }
  };
  st.scheduler->parallel_for(tokens, 64, body);
}

}  // namespace attn::detail
