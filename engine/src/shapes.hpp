// Input/output shape checks shared by the engine and the reference.
#pragma once

#include <cstdint>

#include "attn/config.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"

namespace attn::detail {

/// An input x read as [batch, seq_len, features]; rank 2 means batch 1.
struct BatchShape {
  std::int64_t batch = 0;
  std::int64_t seq_len = 0;
  int rank = 0;

  Shape output_shape(std::int64_t d_out) const {
    return rank == 3 ? Shape{batch, seq_len, d_out} : Shape{seq_len, d_out};
  }
  std::int64_t tokens() const { return batch * seq_len; }
};

/// Checks x against `config`: rank 2 or 3, every size >= 1, last dim d_in, seq_len <=
/// context_length, data present, no overflow. Errors name the parameter and the values.
Result<BatchShape> check_input(const LayerConfig& config, ConstTensorView x);

/// Checks that `out` has `want` shape and data.
Status check_output(TensorView out, const Shape& want);

}  // namespace attn::detail
