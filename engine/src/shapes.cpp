// Input/output shape checks shared by the engine and the reference.
#include "shapes.hpp"

#include <string>

namespace attn::detail {
namespace {
Status invalid(std::string message) { return {ErrorCode::kInvalidArgument, std::move(message)}; }
}  // namespace

Result<BatchShape> check_input(const LayerConfig& config, ConstTensorView x) {
  const Shape& s = x.shape;
  if (s.rank() != 2 && s.rank() != 3) {
    return invalid("x must be [batch, seq_len, d_in] or [seq_len, d_in], got shape " +
                   s.to_string());
  }
  BatchShape b;
  b.rank = s.rank();
  b.batch = s.rank() == 3 ? s[0] : 1;
  b.seq_len = s[-2];
  const std::int64_t d_in = s[-1];
  if (b.batch < 1)
    return invalid("batch = " + std::to_string(b.batch) + " in x " + s.to_string() +
                   " must be >= 1");
  if (b.seq_len < 1) {
    return invalid("seq_len = " + std::to_string(b.seq_len) + " in x " + s.to_string() +
                   " must be >= 1");
  }
  if (d_in != config.d_in) {
    return invalid("x's last dimension is " + std::to_string(d_in) + " (shape " + s.to_string() +
                   ") but d_in = " + std::to_string(config.d_in));
  }
  if (b.seq_len > config.context_length) {
    return Status(ErrorCode::kOutOfRange,
                  "seq_len = " + std::to_string(b.seq_len) +
                      " exceeds context_length = " + std::to_string(config.context_length));
  }
  if (s.numel() < 0) return invalid("x's shape " + s.to_string() + " has too many elements");
  std::int64_t out_numel = 0;
  if (__builtin_mul_overflow(b.tokens(), config.d_out, &out_numel) ||
      __builtin_mul_overflow(out_numel, std::int64_t{16}, &out_numel)) {
    return Status(ErrorCode::kResourceExhausted,
                  "x " + s.to_string() + " with d_out = " + std::to_string(config.d_out) +
                      " needs more memory than can be addressed");
  }
  if (x.data == nullptr) return invalid("x has shape " + s.to_string() + " but no data");
  return b;
}

Status check_output(TensorView out, const Shape& want) {
  if (!(out.shape == want)) {
    return invalid("out has shape " + out.shape.to_string() + ", expected " + want.to_string());
  }
  if (out.data == nullptr)
    return invalid("out has shape " + out.shape.to_string() + " but no data");
  return {};
}

}  // namespace attn::detail
