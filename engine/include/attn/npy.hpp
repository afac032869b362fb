// .npy activations: float32 tensors read from and written to NumPy's file format.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"

namespace attn::io {

/// Reads a .npy file of versions 1.0 to 3.0 holding little-endian float32 ('<f4') in C order
/// with rank <= kMaxRank. Other dtypes, Fortran order, truncated or oversized data give an
/// error naming the file and the problem (kCorruptData or kUnsupported).
ATTN_API Result<Tensor> read_npy(const std::string& path);
/// Parses .npy bytes held in memory; `name` stands for the path in messages.
ATTN_API Result<Tensor> parse_npy(std::span<const std::byte> bytes,
                                  std::string_view name = "<memory>");
/// Returns `tensor` as .npy bytes: version 1.0, '<f4', C order, header padded to 64 bytes.
ATTN_API Result<std::vector<std::byte>> encode_npy(ConstTensorView tensor);
/// Writes encode_npy(tensor) to `path` (replaced).
ATTN_API Status write_npy(const std::string& path, ConstTensorView tensor);

}  // namespace attn::io
