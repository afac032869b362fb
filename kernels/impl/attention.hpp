// Fused attention (flash attention with online softmax), templated on the xsimd arch.
// PLACEHOLDER (issue 3 replaces it): plain loops, one query row at a time.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct FlashAttention {
  template <class Arch>
  static std::size_t q_block(Arch, std::size_t) noexcept { return 64; }
  template <class Arch>
  static std::size_t scratch_floats(Arch, std::size_t head_dim) noexcept {
    return 2 * head_dim;
  }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const AttentionArgs& a) const noexcept {
    float* qrow = a.scratch;
    float* acc = a.scratch + a.head_dim;
    const auto diag = static_cast<std::int64_t>(a.seq_len_kv) - static_cast<std::int64_t>(a.seq_len_q);
    for (std::size_t i = a.q_begin; i < a.q_end; ++i) {
      for (std::size_t d = 0; d < a.head_dim; ++d) qrow[d] = a.q[i * a.ld_q + d] * a.scale;
      std::int64_t hi = static_cast<std::int64_t>(a.seq_len_kv) - 1;
      std::int64_t lo = 0;
      if (a.causal) {
        hi = static_cast<std::int64_t>(i) + diag;
        if (a.window > 0) lo = std::max<std::int64_t>(0, hi - static_cast<std::int64_t>(a.window) + 1);
      }
      float m = -std::numeric_limits<float>::infinity();
      float l = 0.0f;
      for (std::size_t d = 0; d < a.head_dim; ++d) acc[d] = 0.0f;
      for (std::int64_t j = lo; j <= hi; ++j) {
        const float* kr = a.k + j * a.ld_k;
        float s = 0.0f;
        for (std::size_t d = 0; d < a.head_dim; ++d) s += qrow[d] * kr[d];
        const float m_new = (s > m || std::isnan(s)) ? s : m;
        const float alpha = std::exp(m - m_new);
        const float p = std::exp(s - m_new);
        l = l * alpha + p;
        const float* vr = a.v + j * a.ld_v;
        for (std::size_t d = 0; d < a.head_dim; ++d) acc[d] = acc[d] * alpha + p * vr[d];
        m = m_new;
      }
      float* o = a.out + i * a.ld_out;
      for (std::size_t d = 0; d < a.head_dim; ++d) o[d] = l > 0.0f || std::isnan(l) ? acc[d] / l : 0.0f;
    }
  }
};

}  // namespace attn::kernels
