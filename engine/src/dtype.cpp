// Names and sizes of the engine's element types (attn/dtype.hpp).
#include "attn/dtype.hpp"

#include <string>

namespace attn {

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBf16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kInt8:
      return "int8";
  }
  return "unknown";
}

Result<DType> parse_dtype(std::string_view name) {
  for (DType d : {DType::kF32, DType::kBf16, DType::kF16, DType::kInt8}) {
    if (name == to_string(d)) return d;
  }
  return Status(ErrorCode::kInvalidArgument,
                "unknown dtype '" + std::string(name) + "' (expected f32, bf16, f16 or int8)");
}

int dtype_bytes(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBf16:
    case DType::kF16:
      return 2;
    case DType::kInt8:
      return 1;
  }
  return 0;
}

}  // namespace attn
