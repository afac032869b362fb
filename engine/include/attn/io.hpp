// Files in and out: safetensors weights, .npy activations, and attention layers saved from
// PyTorch (the chapter's classes, nn.MultiheadAttention, GPT-2) mapped onto LayerConfig + Weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attn/config.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"

namespace attn::io {

// ---- safetensors ---------------------------------------------------------------------

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

  struct Impl;  ///< opaque: the mapping and the parsed header
  explicit SafetensorsFile(std::shared_ptr<const Impl> impl);

 private:
  std::shared_ptr<const Impl> impl_;
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

// ---- .npy ----------------------------------------------------------------------------

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

// ---- attention layers ----------------------------------------------------------------

/// How an attention layer's tensors are named and laid out in a file. Names after the
/// layer's prefix:
///   kSelfAttentionV1:   W_query, W_key, W_value                    [d_in, d_out] (q = x W)
///   kSelfAttentionV2:   W_query.weight, W_key.weight, W_value.weight [d_out, d_in], optional .bias
///   kCausalAttention:   as v2, plus the `mask` buffer [context_length, context_length]
///   kMultiHeadWrapper:  heads.{i}.W_query.weight [head_dim, d_in] ... (+ .bias, heads.{i}.mask)
///   kMultiHeadAttention (the chapter's): as v2, plus out_proj.weight [d_out, d_out],
///                       out_proj.bias and the `mask` buffer
///   kTorchMultiheadAttention (nn.MultiheadAttention): in_proj_weight [3d, d], in_proj_bias [3d],
///                       out_proj.weight [d, d], out_proj.bias
///   kGpt2:              [attn.]c_attn.weight [d, 3d] (Conv1D: y = x W + b, q|k|v along the last
///                       axis), c_attn.bias [3d], c_proj.weight [d, d], c_proj.bias, optional
///                       attn.bias mask [1, 1, n_ctx, n_ctx]
enum class Layout {
  kAuto,
  kSelfAttentionV1,
  kSelfAttentionV2,
  kCausalAttention,
  kMultiHeadWrapper,
  kMultiHeadAttention,
  kTorchMultiheadAttention,
  kGpt2,
};

/// Returns "auto", "v1", "v2", "causal", "wrapper", "mha", "torch-mha" or "gpt2".
ATTN_API const char* to_string(Layout layout) noexcept;
/// Parses the names to_string gives.
ATTN_API Result<Layout> parse_layout(std::string_view name);

/// Where one attention layer lives in a file.
struct LayerLocation {
  Layout layout = Layout::kAuto;
  std::string prefix;  ///< "" or a tensor-name prefix ending in '.', e.g. "h.1."
};

/// Finds the layer under `prefix` ("h.1" and "h.1." are the same). With kAuto the layout is
/// taken from __metadata__["layout"], else from the tensor names. With an empty prefix and no
/// layer at the top level, a file holding exactly one layer (e.g. only h.0.attn.*) gives it;
/// several give kInvalidArgument listing the prefixes to choose from.
ATTN_API Result<LayerLocation> find_layer(const SafetensorsFile& file,
                                          Layout layout = Layout::kAuto,
                                          std::string_view prefix = {});

/// What load_layer may not find in a file, or should override. A value given here wins; unset,
/// it comes from what the tensors imply (the wrapper's head count, a mask buffer's size), then
/// __metadata__ ("num_heads" for multi-head layouts, "context_length", "causal"), then the
/// layout's default (one head; causal except for v1 and v2). A given value that contradicts
/// the tensors (e.g. num_heads for a wrapper with another head count) is an error.
struct LayerOptions {
  Layout layout = Layout::kAuto;
  std::string prefix;
  std::optional<std::int64_t> num_heads;
  std::optional<std::int64_t> context_length;
  std::optional<bool> causal;
};

/// An attention layer read from a file.
struct Layer {
  LayerConfig config;  ///< context_length 0 when neither the options, the file nor a mask give it
  Weights weights;
  LayerLocation location;
  std::vector<std::string> tensors;  ///< the file's tensors that were read
  std::vector<std::string> notes;    ///< where num_heads, context_length and causal came from
};

/// Reads the layer at options.layout/prefix (see find_layer) into LayerConfig + Weights in nn.Linear
/// layout (the wrapper's heads stacked by rows, GPT-2's Conv1D weights transposed). Masks are
/// checked to be the causal pattern. Errors name the file and tensor: a missing tensor, a shape
/// that disagrees with another or with the options, num_heads unknown for a multi-head layout
/// (kInvalidArgument: "pass num_heads"), a malformed __metadata__ value (kCorruptData).
ATTN_API Result<Layer> load_layer(const SafetensorsFile& file, const LayerOptions& options = {});

}  // namespace attn::io
