// Shapes, non-owning tensor views and a small owning tensor: float32 (or bfloat16/binary16
// bits for weights kept as loaded), row-major, contiguous.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "attn/dtype.hpp"
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

/// An owning tensor (row-major). Used for weights and by tools; the engine itself works on
/// views. Its elements are float32 (dtype() kF32, the default), or bfloat16 / binary16 bits
/// (kBf16 / kF16, made by from_bits): weights kept in a file's 16-bit type
/// (io::LayerOptions::keep_16bit) so that they reach the engine's packed panels without a
/// float32 copy. A 16-bit tensor holds no floats: data() is null and values() is empty; read
/// bits(), or to_f32() for the (exact) float32 values. Engine::create and validate() take
/// either kind; APIs that need floats say so.
class ATTN_API Tensor {
 public:
  Tensor() = default;
  /// Creates a zero-filled float32 tensor. Precondition: shape.numel() >= 0.
  explicit Tensor(Shape shape);
  /// Creates a zero-filled tensor of `dtype` (kF32, kBf16 or kF16; another dtype gives kF32).
  /// Precondition: shape.numel() >= 0.
  Tensor(Shape shape, DType dtype);
  /// Takes `values` as the contents. Precondition: values.size() == shape.numel().
  Tensor(Shape shape, std::vector<float> values);
  /// Creates a zero-filled tensor for a shape that comes from input: fails with
  /// kInvalidArgument on a negative or overflowing size and kResourceExhausted (naming the
  /// shape and bytes) when memory runs out, instead of throwing.
  static Result<Tensor> zeros(Shape shape) noexcept;
  /// Takes `bits` (bfloat16 or binary16 elements, as stored) as a 16-bit tensor's contents.
  /// Fails with kInvalidArgument when dtype is not kBf16 or kF16 or when bits.size() is not
  /// shape.numel().
  static Result<Tensor> from_bits(Shape shape, DType dtype, std::vector<std::uint16_t> bits);

  const Shape& shape() const noexcept { return shape_; }
  /// Returns kF32, kBf16 or kF16.
  DType dtype() const noexcept { return dtype_; }
  /// Returns the number of elements, whatever the dtype.
  std::int64_t numel() const noexcept {
    return static_cast<std::int64_t>(dtype_ == DType::kF32 ? values_.size() : bits_.size());
  }
  bool empty() const noexcept { return values_.empty() && bits_.empty(); }
  /// The float32 elements; null (data) or empty (values) for a 16-bit tensor.
  float* data() noexcept { return values_.data(); }
  const float* data() const noexcept { return values_.data(); }
  std::vector<float>& values() noexcept { return values_; }
  const std::vector<float>& values() const noexcept { return values_; }
  /// The 16-bit elements of a kBf16/kF16 tensor; empty for a float32 one.
  std::vector<std::uint16_t>& bits() noexcept { return bits_; }
  const std::vector<std::uint16_t>& bits() const noexcept { return bits_; }
  /// Returns a float32 tensor of the same shape and values (a copy; widening 16-bit elements
  /// is exact). Throws std::bad_alloc when memory runs out, as the constructors do.
  Tensor to_f32() const;
  /// Views of the float32 elements (data null for a 16-bit tensor).
  TensorView view() noexcept { return {values_.data(), shape_}; }
  ConstTensorView view() const noexcept { return {values_.data(), shape_}; }

 private:
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::vector<float> values_;
  std::vector<std::uint16_t> bits_;
};

}  // namespace attn
