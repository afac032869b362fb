// Shape arithmetic and the owning Tensor.
#include "attn/tensor.hpp"

#include <algorithm>
#include <stdexcept>

namespace attn {

Shape::Shape(std::initializer_list<std::int64_t> dims)
    : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) : rank_(static_cast<int>(dims.size())) {
  std::copy_n(dims.begin(), std::min<std::size_t>(dims.size(), kMaxRank), dims_.begin());
}

std::int64_t Shape::numel() const noexcept {
  if (rank_ > kMaxRank) return -1;
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[i] < 0) return -1;
    if (__builtin_mul_overflow(n, dims_[i], &n)) return -1;
  }
  return n;
}

std::string Shape::to_string() const {
  std::string s = "[";
  for (int i = 0; i < std::min(rank_, kMaxRank); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (rank_ > kMaxRank) s += ", ...";
  return s + "]";
}

bool operator==(const Shape& a, const Shape& b) noexcept {
  if (a.rank() != b.rank()) return false;
  for (int i = 0; i < std::min(a.rank(), kMaxRank); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

Tensor::Tensor(Shape shape)
    : shape_(shape), values_(static_cast<std::size_t>(std::max<std::int64_t>(shape.numel(), 0))) {}

Tensor::Tensor(Shape shape, std::vector<float> values)
    : shape_(shape), values_(std::move(values)) {}

Result<Tensor> Tensor::zeros(Shape shape) noexcept {
  const std::int64_t n = shape.numel();
  if (n < 0)
    return Status(ErrorCode::kInvalidArgument,
                  "tensor shape " + shape.to_string() + " has no valid size");
  try {
    return Tensor(shape);
  } catch (const std::exception&) {  // bad_alloc, or length_error past max_size()
    return Status(ErrorCode::kResourceExhausted,
                  "cannot allocate a tensor of shape " + shape.to_string() + " (" +
                      std::to_string(static_cast<std::uint64_t>(n) * sizeof(float)) + " bytes)");
  }
}

}  // namespace attn
