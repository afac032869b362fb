// PyTorch-compatible draws (see ../shared/book/ch03-reference.md for the recipe).
#include "attn/chapter/random.hpp"

#include <cmath>

namespace attn {

TorchGenerator::TorchGenerator(std::uint64_t seed)
    : engine_(static_cast<std::mt19937::result_type>(seed & 0xFFFFFFFFu)) {}

std::uint64_t TorchGenerator::next_u64() {
  const std::uint64_t hi = next_u32();
  const std::uint64_t lo = next_u32();
  return (hi << 32) | lo;
}

void TorchGenerator::rand(std::span<float> out) {
  for (float& x : out) {
    x = static_cast<float>(next_u32() & 0xFFFFFFu) * 0x1p-24f;  // exact: 24 bits fit a float
  }
}

Tensor TorchGenerator::rand(Shape shape) {
  Tensor t(shape);
  rand(std::span<float>(t.values()));
  return t;
}

void TorchGenerator::uniform(std::span<float> out, double from, double to) {
  // PyTorch rounds the bounds to the tensor's dtype, then computes in double.
  const double lo = static_cast<double>(static_cast<float>(from));
  const double hi = static_cast<double>(static_cast<float>(to));
  for (float& x : out) {
    const double u = static_cast<double>(static_cast<float>(next_u32() & 0xFFFFFFu) * 0x1p-24f);
    x = static_cast<float>(u * (hi - lo) + lo);
  }
}

Tensor TorchGenerator::linear_weight(std::int64_t d_in, std::int64_t d_out) {
  // kaiming_uniform_(a = sqrt(5)): gain = sqrt(2 / (1 + a^2)), std = gain / sqrt(fan_in),
  // bound = sqrt(3) * std, all in double as torch.nn.init computes them.
  const double gain = std::sqrt(2.0 / (1.0 + 5.0));
  const double stddev = gain / std::sqrt(static_cast<double>(d_in));
  const double bound = std::sqrt(3.0) * stddev;
  Tensor w(Shape{d_out, d_in});
  uniform(std::span<float>(w.values()), -bound, bound);
  return w;
}

Tensor TorchGenerator::linear_bias(std::int64_t d_in, std::int64_t d_out) {
  const double bound = d_in > 0 ? 1.0 / std::sqrt(static_cast<double>(d_in)) : 0.0;
  Tensor b(Shape{d_out});
  uniform(std::span<float>(b.values()), -bound, bound);
  return b;
}

bool TorchGenerator::dropout_keep(double p) {
  const std::uint64_t v = next_u64();
  const double u = static_cast<double>(v & ((std::uint64_t{1} << 53) - 1)) * 0x1p-53;
  return u < 1.0 - p;
}

}  // namespace attn
