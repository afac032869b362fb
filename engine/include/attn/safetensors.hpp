// safetensors weights: a validated, memory-mapped reader and a writer (F32, F16, BF16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"

namespace attn::io {

/// The element types safetensors defines. Floating types and integers read as float32;
/// the F8 types are listed (a file holding them is valid) but cannot be read.
enum class DType {
  kBool,
  kU8,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kU64,
  kI64,
  kF16,
  kBF16,
  kF32,
  kF64,
  kF8E4M3,
  kF8E5M2
};

/// Returns the safetensors name: "F32", "BF16", ...
ATTN_API const char* to_string(DType dtype) noexcept;
/// Returns the bytes of one element (1 for BOOL and the F8 types).
ATTN_API std::size_t dtype_size(DType dtype) noexcept;

/// One tensor of a safetensors file, as its header describes it (already validated).
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;  ///< any rank; [] is a scalar
  std::uint64_t offset_bytes = 0;   ///< data_offsets[0], from the start of the data area
  std::uint64_t size_bytes = 0;     ///< data_offsets[1] - data_offsets[0]
};

namespace detail {
struct SafetensorsData;  // the mapping and the parsed header (engine/src/io/safetensors.cpp)
}  // namespace detail

/// A safetensors file with its header validated and its bytes mapped read-only.
///
/// open() checks every header field before any tensor byte is touched: the header length lies
/// within the file, the JSON is well formed with no duplicate keys, every dtype is known,
/// every byte size equals product(shape) x dtype size (without overflow), and the tensors'
/// data_offsets tile the data area exactly (from 0, in order, no overlap, no gap, no trailing
/// bytes). A bad file gives kCorruptData naming the file, the tensor and the problem.
/// Thread safety: immutable; read() may run from many threads. Copies share the mapping.
class ATTN_API SafetensorsFile {
 public:
  /// Maps `path` and validates its header. Errors: kIoError (cannot open/map), kCorruptData.
  static Result<SafetensorsFile> open(const std::string& path);
  /// Validates a file held in memory (copied); `name` stands for the path in messages.
  static Result<SafetensorsFile> from_bytes(std::span<const std::byte> bytes,
                                            std::string name = "<memory>");

  /// Returns the path (or the name given to from_bytes).
  const std::string& name() const noexcept;
  /// Returns every tensor in the order of its data in the file.
  const std::vector<TensorInfo>& tensors() const noexcept;
  /// Returns the tensor called `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const noexcept;
  /// Returns the header's __metadata__ (string to string; empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept;

  /// Returns tensor `name` converted to float32 (F16/BF16/F64 and integers are converted;
  /// F8 gives kUnsupported). Errors name the file and tensor: kInvalidArgument when absent,
  /// kUnsupported when its rank exceeds kMaxRank.
  Result<Tensor> read(std::string_view name) const;
  /// Returns the stored bytes of `info` (little-endian, possibly unaligned), for callers
  /// that keep F16/BF16 as they are. Precondition: `info` comes from this file's tensors().
  std::span<const std::byte> raw(const TensorInfo& info) const noexcept;

 private:
  explicit SafetensorsFile(std::shared_ptr<const detail::SafetensorsData> data);

  std::shared_ptr<const detail::SafetensorsData> impl_;
};

/// A float32 tensor to write, with its name in the file.
struct NamedTensor {
  std::string name;
  ConstTensorView tensor;
};

/// Returns a safetensors file: header (tensors in the given order, __metadata__ when not
/// empty, padded with spaces to 8 bytes) then the data, each tensor stored as `dtype` (kF32,
/// kF16 or kBF16; the last two round to nearest even). Fails on an empty or duplicate name,
/// a shape of rank > kMaxRank or negative size, a null data pointer with elements, or another
/// dtype.
ATTN_API Result<std::vector<std::byte>> encode_safetensors(
    std::span<const NamedTensor> tensors, const std::map<std::string, std::string>& metadata = {},
    DType dtype = DType::kF32);
/// Writes encode_safetensors(...) to `path` (replaced). Errors: as encode, or kIoError.
ATTN_API Status write_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                                  const std::map<std::string, std::string>& metadata = {},
                                  DType dtype = DType::kF32);

}  // namespace attn::io
