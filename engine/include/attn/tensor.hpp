// Shapes, non-owning tensor views and a small owning tensor; float32, row-major, contiguous.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "attn/export.hpp"
#include "attn/status.hpp"

namespace attn {

inline constexpr int kMaxRank = 4;

/// Dimensions of a row-major tensor, rank 0 to kMaxRank. Dimensions are signed so that a
/// negative size can be reported as an error rather than wrap around.
class ATTN_API Shape {
 public:
  Shape() = default;
  /// Records up to kMaxRank dimensions; a longer list gives rank() > kMaxRank, which every
  /// API that takes a shape rejects.
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::span<const std::int64_t> dims);

  int rank() const noexcept { return rank_; }
  /// Returns dimension i (0 <= i < min(rank(), kMaxRank)); negative i counts from the end.
  std::int64_t operator[](int i) const noexcept { return dims_[i < 0 ? rank_ + i : i]; }
  /// Returns the product of the dimensions, or -1 when a dimension is negative, the rank is
  /// over kMaxRank, or the product overflows int64.
  std::int64_t numel() const noexcept;
  /// Returns e.g. "[2, 6, 3]".
  std::string to_string() const;

 private:
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

/// True when ranks and dimensions are equal.
ATTN_API bool operator==(const Shape& a, const Shape& b) noexcept;

/// A mutable view of caller-owned memory: `shape.numel()` floats at `data`.
struct TensorView {
  float* data = nullptr;
  Shape shape;
};

/// A read-only view of caller-owned memory.
struct ConstTensorView {
  const float* data = nullptr;
  Shape shape;

  ConstTensorView() = default;
  ConstTensorView(const float* d, Shape s) : data(d), shape(s) {}
  ConstTensorView(TensorView v) : data(v.data), shape(v.shape) {}  // NOLINT: implicit by design
};

/// An owning float32 tensor (row-major). Used for weights and by tools; the engine itself
/// works on views.
class ATTN_API Tensor {
 public:
  Tensor() = default;
  /// Creates a zero-filled tensor. Precondition: shape.numel() >= 0.
  explicit Tensor(Shape shape);
  /// Takes `values` as the contents. Precondition: values.size() == shape.numel().
  Tensor(Shape shape, std::vector<float> values);
  /// Creates a zero-filled tensor for a shape that comes from input: fails with
  /// kInvalidArgument on a negative or overflowing size and kResourceExhausted (naming the
  /// shape and bytes) when memory runs out, instead of throwing.
  static Result<Tensor> zeros(Shape shape) noexcept;

  const Shape& shape() const noexcept { return shape_; }
  std::int64_t numel() const noexcept { return static_cast<std::int64_t>(values_.size()); }
  bool empty() const noexcept { return values_.empty(); }
  float* data() noexcept { return values_.data(); }
  const float* data() const noexcept { return values_.data(); }
  std::vector<float>& values() noexcept { return values_; }
  const std::vector<float>& values() const noexcept { return values_; }
  TensorView view() noexcept { return {values_.data(), shape_}; }
  ConstTensorView view() const noexcept { return {values_.data(), shape_}; }

 private:
  Shape shape_;
  std::vector<float> values_;
};

}  // namespace attn
