// Teaching aid (attn/chapter/): a random generator that reproduces PyTorch's CPU generator,
// and the chapter's weights drawn with it, so that a seed gives the book's weights and dropout
// masks bit for bit.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "attn/config.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"

namespace attn {

/// torch.manual_seed(seed) followed by the draws the chapter makes.
/// Thread safety: none; one generator per thread.
class ATTN_API TorchGenerator {
 public:
  /// Seeds MT19937 with the low 32 bits of `seed`, as torch.manual_seed does.
  explicit TorchGenerator(std::uint64_t seed);

  /// Returns the next 32-bit draw.
  std::uint32_t next_u32() { return static_cast<std::uint32_t>(engine_()); }
  /// Returns a 64-bit draw made of two 32-bit draws, the first one the high half.
  std::uint64_t next_u64();

  /// Fills `out` as torch.rand: (r & 0xFFFFFF) * 2^-24 per element, in order.
  void rand(std::span<float> out);
  /// Returns torch.rand(shape).
  Tensor rand(Shape shape);
  /// Fills `out` as tensor.uniform_(from, to) on float32.
  void uniform(std::span<float> out, double from, double to);
  /// Returns nn.Linear(d_in, d_out)'s weight [d_out, d_in] (kaiming_uniform_, a = sqrt(5)).
  Tensor linear_weight(std::int64_t d_in, std::int64_t d_out);
  /// Returns nn.Linear(d_in, d_out)'s bias [d_out]: uniform_(-1/sqrt(d_in), 1/sqrt(d_in)).
  Tensor linear_bias(std::int64_t d_in, std::int64_t d_out);
  /// Returns whether the next element survives nn.Dropout(p) in training mode (one 64-bit
  /// draw: kept when (v & (2^53 - 1)) * 2^-53 < 1 - p). Survivors are scaled by 1/(1-p).
  bool dropout_keep(double p);

 private:
  std::mt19937 engine_;
};

/// Draws weights the way the chapter's PyTorch code does after torch.manual_seed(seed):
/// SelfAttention_v1 uses torch.rand(d_in, d_out) per matrix; the other variants create
/// nn.Linear layers in constructor order (W_query, W_key, W_value, then out_proj; the
/// wrapper head by head). The same seed gives the book's weights bit for bit.
ATTN_API Result<Weights> init_weights_like_torch(const LayerConfig& config, std::uint64_t seed);

}  // namespace attn
