// Private: safetensors element types by name, and conversions between them and float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "attn/safetensors.hpp"

namespace attn::io::detail {

/// Returns the DType whose safetensors name is `name` ("F32", ...), or nullopt.
std::optional<DType> parse_dtype(std::string_view name) noexcept;

/// True when to_f32 can convert `dtype` (all but the F8 types).
bool convertible_to_f32(DType dtype) noexcept;

/// Converts `n` little-endian elements of `dtype` at `src` (any alignment) to float32.
/// Precondition: convertible_to_f32(dtype).
void to_f32(DType dtype, const std::byte* src, std::size_t n, float* dst) noexcept;

/// Returns IEEE binary16 bits -> float32 (exact, subnormals, inf and NaN included).
float f16_to_f32(std::uint16_t h) noexcept;
/// Returns float32 -> binary16 bits, rounded to nearest even; overflow gives inf, NaN stays NaN.
std::uint16_t f32_to_f16(float f) noexcept;
/// Returns float32 -> bfloat16 bits, rounded to nearest even; NaN stays NaN.
std::uint16_t f32_to_bf16(float f) noexcept;

}  // namespace attn::io::detail
