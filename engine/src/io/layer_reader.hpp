// Private: reading one layer's tensors under its prefix, and resolving its config from the
// options, __metadata__ and what the tensors say.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attn/layer.hpp"
#include "io/file_bytes.hpp"

namespace attn::io::detail {

// Reads tensors under one prefix, remembers which were read, and names them in errors.
class LayerReader {
 public:
  // keep_16bit: get_matrix keeps tensors stored in that 16-bit type (kBf16: BF16, kF16: F16)
  // as their bits instead of reading them as float32; std::nullopt or kF32 reads everything
  // as float32.
  LayerReader(const SafetensorsFile& file, const LayerLocation& loc,
              std::optional<attn::DType> keep_16bit = std::nullopt)
      : file_(file), loc_(loc), keep_16bit_(keep_16bit) {}

  std::string full(std::string_view name) const { return loc_.prefix + std::string(name); }
  bool has(std::string_view name) const { return file_.find(full(name)) != nullptr; }

  Result<Tensor> get(std::string_view name) {
    if (!has(name)) {
      return fail(ErrorCode::kInvalidArgument, "layout " + std::string(to_string(loc_.layout)) +
                                                   " needs tensor '" + full(name) +
                                                   "', which is missing");
    }
    read_.push_back(full(name));
    return file_.read(full(name));
  }
  // Reads a weight `name` (16-bit when the file stores it in the type keep_16bit asks for).
  Result<Tensor> get_weight(std::string_view name) {
    const TensorInfo* info = file_.find(full(name));
    const DType want = keep_16bit_ == attn::DType::kBf16  ? DType::kBF16
                       : keep_16bit_ == attn::DType::kF16 ? DType::kF16
                                                          : DType::kF32;
    if (info == nullptr || want == DType::kF32 || info->dtype != want || info->shape.size() != 2)
      return get(name);
    read_.push_back(full(name));
    const std::span<const std::byte> raw = file_.raw(*info);
    // Little-endian in the file, as on the hosts attn builds for (x86-64).
    std::vector<std::uint16_t> bits(raw.size() / 2);
    if (!bits.empty()) std::memcpy(bits.data(), raw.data(), bits.size() * 2);
    return Tensor::from_bits(Shape{info->shape[0], info->shape[1]}, *keep_16bit_, std::move(bits));
  }
  // Reads weight `name` and checks it is [rows, cols] (a size < 0 matches any).
  Result<Tensor> get_matrix(std::string_view name, std::int64_t rows, std::int64_t cols,
                            const std::string& expected) {
    Result<Tensor> t = get_weight(name);
    if (!t.ok()) return t;
    const Shape& s = t->shape();
    if (s.rank() != 2 || (rows >= 0 && s[0] != rows) || (cols >= 0 && s[1] != cols))
      return shape_error(name, s, expected);
    return t;
  }
  // Reads `name` and checks it is [n].
  Result<Tensor> get_vector(std::string_view name, std::int64_t n, const std::string& expected) {
    Result<Tensor> t = get(name);
    if (!t.ok()) return t;
    if (t->shape().rank() != 1 || t->shape()[0] != n)
      return shape_error(name, t->shape(), expected);
    return t;
  }

  Status shape_error(std::string_view name, const Shape& s, const std::string& expected) const {
    return fail(ErrorCode::kInvalidArgument, "tensor '" + full(name) + "' has shape " +
                                                 s.to_string() + ", expected " + expected);
  }
  Status fail(ErrorCode code, const std::string& message) const {
    return detail::file_error(code, file_.name(), message);
  }
  const SafetensorsFile& file() const { return file_; }
  std::vector<std::string>& read() { return read_; }

 private:
  const SafetensorsFile& file_;
  const LayerLocation& loc_;
  std::optional<attn::DType> keep_16bit_;
  std::vector<std::string> read_;
};

// What the tensors say about the config, before options and metadata are applied.
struct Found {
  std::int64_t num_heads = 0;       // 0: the tensors do not say
  std::int64_t context_length = 0;  // from a mask, 0 when none
  std::string context_source;
  // hf-llama and gpt-neox: the query and key projections' rows (num_heads * head_dim and
  // num_kv_heads * head_dim), from which head_dim and num_kv_heads follow; 0 for the others.
  std::int64_t q_dim = 0, kv_dim = 0;
  std::string q_name, kv_name;  // the tensors those rows were read from, for errors
};

/// Sets layer.config's num_heads, context_length and causal: the options first, then what the
/// tensors say (`found`), then __metadata__, then the layout's default; then num_kv_heads,
/// head_dim, rope, rope_theta, rope_dim, scale and window: options, __metadata__, the shapes
/// (`found.q_dim`, `found.kv_dim`), the layout's default. Records each choice in layer.notes.
/// Errors: a malformed __metadata__ value (kCorruptData), a conflict between the options or
/// metadata and the tensors (both named), num_heads unknown for a multi-head layout.
Status resolve_config(const LayerReader& r, const LayerOptions& options, const Found& found,
                      Layer& layer);

}  // namespace attn::io::detail
