// safetensors element types: names, sizes and conversions to and from float32.
#include "io/dtype.hpp"

#include <bit>
#include <cstring>

namespace attn::io {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};

// The dtypes of the safetensors specification (safetensors/src/tensor.rs).
constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},          {DType::kI8, "I8", 1},
    {DType::kU16, "U16", 2},   {DType::kI16, "I16", 2},        {DType::kU32, "U32", 4},
    {DType::kI32, "I32", 4},   {DType::kU64, "U64", 8},        {DType::kI64, "I64", 8},
    {DType::kF16, "F16", 2},   {DType::kBF16, "BF16", 2},      {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},   {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeInfo* info(DType dtype) noexcept {
  for (const DTypeInfo& d : kDTypes)
    if (d.dtype == dtype) return &d;
  return nullptr;
}

template <class T>
void convert(const std::byte* src, std::size_t n, float* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

const char* to_string(DType dtype) noexcept {
  const DTypeInfo* d = info(dtype);
  return d ? d->name : "unknown";
}

std::size_t dtype_size(DType dtype) noexcept {
  const DTypeInfo* d = info(dtype);
  return d ? d->size : 0;
}

namespace detail {

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (const DTypeInfo& d : kDTypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

bool convertible_to_f32(DType dtype) noexcept {
  return dtype != DType::kF8E4M3 && dtype != DType::kF8E5M2 && info(dtype) != nullptr;
}

float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf or NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal: shift the mantissa up until its leading 1 is the implicit bit.
    std::uint32_t e = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds past 65504
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): value = abs_float / 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24 for e in 102..112
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  // Normal: rebias and round the 13 dropped bits to nearest even (a carry may bump the exponent).
  std::uint32_t r = abs - 0x38000000u;
  r += 0xFFFu + ((r >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

void to_f32(DType dtype, const std::byte* src, std::size_t n, float* dst) noexcept {
  switch (dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));  // dst may be null when n == 0
      return;
    case DType::kF16:
    case DType::kBF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] =
            dtype == DType::kF16 ? f16_to_f32(h) : std::bit_cast<float>(std::uint32_t{h} << 16);
      }
      return;
    case DType::kF64:
      return convert<double>(src, n, dst);
    case DType::kBool:
      for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] != std::byte{0} ? 1.0f : 0.0f;
      return;
    case DType::kU8:
      return convert<std::uint8_t>(src, n, dst);
    case DType::kI8:
      return convert<std::int8_t>(src, n, dst);
    case DType::kU16:
      return convert<std::uint16_t>(src, n, dst);
    case DType::kI16:
      return convert<std::int16_t>(src, n, dst);
    case DType::kU32:
      return convert<std::uint32_t>(src, n, dst);
    case DType::kI32:
      return convert<std::int32_t>(src, n, dst);
    case DType::kU64:
      return convert<std::uint64_t>(src, n, dst);
    case DType::kI64:
      return convert<std::int64_t>(src, n, dst);
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return;
  }
}

}  // namespace detail
}  // namespace attn::io
