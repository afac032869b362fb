// Shape arithmetic and the owning Tensor.
#include "attn/tensor.hpp"

#include <algorithm>
#include <stdexcept>

#include "kernels/half.hpp"

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

Tensor::Tensor(Shape shape, DType dtype) : shape_(shape) {
  const auto n = static_cast<std::size_t>(std::max<std::int64_t>(shape.numel(), 0));
  if (dtype == DType::kBf16 || dtype == DType::kF16) {
    dtype_ = dtype;
    bits_.resize(n);
  } else {
    values_.resize(n);
  }
}

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

Result<Tensor> Tensor::from_bits(Shape shape, DType dtype, std::vector<std::uint16_t> bits) {
  if (dtype != DType::kBf16 && dtype != DType::kF16) {
    return Status(ErrorCode::kInvalidArgument, std::string("Tensor::from_bits: dtype ") +
                                                   to_string(dtype) + " is not bf16 or f16");
  }
  if (shape.numel() < 0 || bits.size() != static_cast<std::size_t>(shape.numel())) {
    return Status(ErrorCode::kInvalidArgument, "Tensor::from_bits: " + std::to_string(bits.size()) +
                                                   " elements for shape " + shape.to_string());
  }
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.bits_ = std::move(bits);
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::kF32) return *this;
  const kernels::WeightType type =
      dtype_ == DType::kBf16 ? kernels::WeightType::kBf16 : kernels::WeightType::kF16;
  std::vector<float> v(bits_.size());
  for (std::size_t i = 0; i < bits_.size(); ++i) v[i] = kernels::widen16(bits_[i], type);
  return Tensor(shape_, std::move(v));
}

}  // namespace attn
