// Decode attention: one query against a chunk of keys, and the merge of chunk partials.
// PLACEHOLDER (issue 3 replaces it): plain loops.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct DecodeChunk {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* q, const float* k, std::ptrdiff_t ld_k,
                                    const float* v, std::ptrdiff_t ld_v, std::size_t n_kv,
                                    std::size_t head_dim, float scale, float* out,
                                    DecodePartial* partial) const noexcept {
    float m = -std::numeric_limits<float>::infinity();
    float l = 0.0f;
    for (std::size_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
    for (std::size_t j = 0; j < n_kv; ++j) {
      float s = 0.0f;
      for (std::size_t d = 0; d < head_dim; ++d) s += q[d] * k[j * ld_k + d];
      s *= scale;
      const float m_new = (s > m || std::isnan(s)) ? s : m;
      const float alpha = std::exp(m - m_new);
      const float p = std::exp(s - m_new);
      l = l * alpha + p;
      for (std::size_t d = 0; d < head_dim; ++d) out[d] = out[d] * alpha + p * v[j * ld_v + d];
      m = m_new;
    }
    partial->max = m;
    partial->sum = l;
  }
};

struct DecodeMerge {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* outs, const DecodePartial* parts,
                                    std::size_t n_chunks, std::size_t head_dim,
                                    float* out) const noexcept {
    float m = -std::numeric_limits<float>::infinity();
    for (std::size_t c = 0; c < n_chunks; ++c) m = parts[c].max > m ? parts[c].max : m;
    for (std::size_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
    if (m == -std::numeric_limits<float>::infinity()) return;
    float l = 0.0f;
    for (std::size_t c = 0; c < n_chunks; ++c) {
      if (parts[c].max == -std::numeric_limits<float>::infinity()) continue;
      const float w = std::exp(parts[c].max - m);
      l += w * parts[c].sum;
      for (std::size_t d = 0; d < head_dim; ++d) out[d] += w * outs[c * head_dim + d];
    }
    for (std::size_t d = 0; d < head_dim; ++d) out[d] /= l;
  }
};

}  // namespace attn::kernels
