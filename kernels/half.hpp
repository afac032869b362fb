// Scalar conversions between float32 and the 16-bit weight types (bfloat16, IEEE binary16):
// the plain definitions the packing code and the reference twins use. Not for the per-ISA
// objects (an inline function there would be shared between ISAs; see check_isa_symbols.sh).
#pragma once

#include <bit>
#include <cstdint>

#include "kernels/kernels.hpp"

namespace attn::kernels {

/// Returns the float32 value of bfloat16 bits (exact).
inline float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(std::uint32_t{h} << 16);
}

/// Returns the float32 value of binary16 bits (exact: subnormals, Inf and NaN included).
inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  std::uint32_t e = 113;  // subnormal: normalise the mantissa
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x3FFu) << 13));
}

/// Returns the float32 value of a 16-bit weight element of type t (kBf16 or kF16).
inline float widen16(std::uint16_t h, WeightType t) noexcept {
  return t == WeightType::kBf16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/// A float32 rounded to a 16-bit type. overflow: x was finite but rounds past the type's
/// largest finite value (bits then hold the signed infinity).
struct Narrowed {
  std::uint16_t bits = 0;
  bool overflow = false;
};

/// Rounds to bfloat16, to nearest even. NaN stays NaN (quiet), Inf stays Inf.
inline Narrowed f32_to_bf16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return {static_cast<std::uint16_t>((x >> 16) | 0x40u), false};
  const auto bits = static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
  return {bits, abs < 0x7F800000u && (bits & 0x7FFFu) == 0x7F80u};
}

/// Rounds to binary16, to nearest even (subnormals included). NaN stays NaN (quiet), Inf
/// stays Inf; |x| >= 65520 (finite) overflows.
inline Narrowed f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {
    return {static_cast<std::uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu)), false};
  }
  if (abs >= 0x477FF000u) {  // 65520 and up round past 65504
    return {static_cast<std::uint16_t>(sign | 0x7C00u), abs != 0x7F800000u};
  }
  if (abs < 0x38800000u) {  // the result is subnormal or zero: abs / 2^-24, rounded
    if (abs < 0x33000000u) return {sign, false};
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return {static_cast<std::uint16_t>(sign | r), false};
  }
  std::uint32_t r = abs - 0x38000000u;  // rebias 127 -> 15, round the 13 dropped bits
  r += 0xFFFu + ((r >> 13) & 1u);
  return {static_cast<std::uint16_t>(sign | (r >> 13)), false};
}

/// Rounds to t (kBf16 or kF16).
inline Narrowed narrow16(float f, WeightType t) noexcept {
  return t == WeightType::kBf16 ? f32_to_bf16(f) : f32_to_f16(f);
}

}  // namespace attn::kernels
