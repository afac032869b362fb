// A 64-byte aligned float buffer that grows on request and reports allocation failure.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace attn::detail {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;

  /// Ensures room for `floats` floats (contents are not kept); false if allocation fails.
  [[nodiscard]] bool reserve(std::size_t floats) noexcept {
    if (floats <= capacity_) return true;
    constexpr std::size_t kAlign = 64;
    if (floats > (SIZE_MAX - kAlign) / sizeof(float)) return false;
    const std::size_t bytes = (floats * sizeof(float) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    if (p == nullptr) return false;
    data_.reset(static_cast<float*>(p));
    capacity_ = bytes / sizeof(float);
    return true;
  }

  /// Frees the memory; the next reserve() allocates again.
  void release() noexcept {
    data_.reset();
    capacity_ = 0;
  }

  float* data() const noexcept { return data_.get(); }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t bytes() const noexcept { return capacity_ * sizeof(float); }

 private:
  struct Free {
    void operator()(float* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  std::size_t capacity_ = 0;
};

/// Rounds a float count up to a whole number of 64-byte lines.
constexpr std::size_t round_up_floats(std::size_t floats) noexcept {
  return (floats + 15) / 16 * 16;
}

}  // namespace attn::detail
