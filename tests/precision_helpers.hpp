// Shared by the dtype precision tests (test_dtype.cpp, test_kv_dtype.cpp): the error summary
// and the two served-layer shapes the issue measures on.
#pragma once

#include <cstdint>

#include "attn/config.hpp"

namespace test {

struct Errors {
  double max_abs = 0;  ///< max |got - want| over the output
  double max_rel = 0;  ///< max_abs / max |want| (normwise: elementwise blows up near zeros)
};

inline attn::LayerConfig gpt2_like(std::int64_t context) {
  attn::LayerConfig c = attn::LayerConfig::gpt2_small();
  c.context_length = context;
  return c;
}

// llama-3.2-1b's attention: d 2048, 32 heads, 8 kv heads, head_dim 64, rope neox, theta 5e5.
inline attn::LayerConfig llama_like(std::int64_t context) {
  attn::LayerConfig c;
  c.variant = attn::Variant::kMultiHeadAttention;
  c.d_in = c.d_out = 2048;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.context_length = context;
  c.qkv_bias = false;
  c.mask = attn::Mask::kCausal;
  c.rope = attn::Rope::kNeox;
  c.rope_theta = 500000;
  return c;
}

}  // namespace test
