// Element types of an engine's weights, arithmetic and key/value cache (RunOptions).
#pragma once

#include <string_view>

#include "attn/export.hpp"
#include "attn/status.hpp"

namespace attn {

/// An element type an engine stores or computes in. Which settings take which types:
///   weight_dtype:  kF32, kBf16, kF16   (packed projection panels; bias stays f32)
///   compute_dtype: kF32, kBf16         (the multiply-adds; kBf16 needs AVX512-BF16 kernels)
///   kv_dtype:      kF32, kBf16, kF16, kInt8 (the session cache)
enum class DType {
  kF32,   ///< IEEE binary32
  kBf16,  ///< bfloat16: f32's exponent, 8 significant bits
  kF16,   ///< IEEE binary16: largest finite 65504, 11 significant bits
  kInt8,  ///< signed 8-bit with float32 scales (KV cache only)
};

/// Returns "f32", "bf16", "f16" or "int8".
ATTN_API const char* to_string(DType dtype) noexcept;
/// Parses "f32", "bf16", "f16", "int8"; the error lists the names.
ATTN_API Result<DType> parse_dtype(std::string_view name);
/// Returns the bytes of one element (int8: 1, scales not counted).
ATTN_API int dtype_bytes(DType dtype) noexcept;

}  // namespace attn
