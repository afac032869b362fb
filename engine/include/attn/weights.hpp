// The trainable parameters of an engine, in nn.Linear layout, and PyTorch-compatible init.
#pragma once

#include <cstdint>

#include "attn/config.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"

namespace attn {

/// Parameters of one attention layer. Projections use nn.Linear's layout, y = x Wᵀ + b:
/// w_query, w_key, w_value are [d_out, d_in]; head h owns rows h*head_dim .. (h+1)*head_dim-1.
/// For the wrapper, head i's W_query.weight is rows i*head_dim.. of w_query. Tensors a variant
/// does not use stay empty. The four weight matrices may be float32 or 16-bit (bf16/f16 bits,
/// e.g. from io::LayerOptions::keep_16bit): Engine::create packs either; the biases are float32.
struct ATTN_API Weights {
  Tensor w_query, w_key, w_value;  ///< [d_out, d_in]; empty for Variant::kSimplified
  Tensor b_query, b_key, b_value;  ///< [d_out] when LayerConfig::qkv_bias, else empty
  Tensor w_out;                    ///< [d_out, d_out]: kMultiHeadAttention's out_proj.weight
  Tensor b_out;                    ///< [d_out]: out_proj.bias

  /// Builds weights from SelfAttention_v1's parameters, each [d_in, d_out] (q = x W).
  /// Each keeps its dtype (16-bit bits are transposed unchanged).
  /// Fails when the three shapes differ or are not rank 2.
  static Result<Weights> from_input_major(const Tensor& w_query, const Tensor& w_key,
                                          const Tensor& w_value);
};

/// Checks that `weights` has exactly the tensors `config` needs, with the right shapes.
/// The error names the tensor and both shapes, or the bias that is not float32.
ATTN_API Status validate(const LayerConfig& config, const Weights& weights);

}  // namespace attn
