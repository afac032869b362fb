// Private: validation of a safetensors header (the JSON after the 8-byte length).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "attn/safetensors.hpp"

namespace attn::io::detail {

/// What a valid header describes.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  ///< sorted by data offset
  std::map<std::string, std::string> metadata;
};

/// The largest header accepted, as in the reference implementation (safetensors' MAX_HEADER_SIZE).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

/// Parses and validates `json`, the header of file `file_name` whose data area holds
/// `data_bytes` bytes: well-formed JSON object, no duplicate key at any level, nesting depth
/// <= 8, known dtypes, shapes of non-negative integers whose byte size (product x dtype size)
/// fits in 64 bits and equals the tensor's data_offsets span, and offsets that tile
/// [0, data_bytes) exactly. Errors: kCorruptData naming the file, the tensor and the problem.
Result<SafetensorsHeader> parse_safetensors_header(std::string_view json, std::uint64_t data_bytes,
                                                   std::string_view file_name);

}  // namespace attn::io::detail
