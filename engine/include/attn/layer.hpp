// Attention layers saved from PyTorch (the chapter's classes, nn.MultiheadAttention, GPT-2)
// found in a safetensors file and mapped onto LayerConfig + Weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attn/config.hpp"
#include "attn/dtype.hpp"
#include "attn/export.hpp"
#include "attn/safetensors.hpp"
#include "attn/status.hpp"
#include "attn/weights.hpp"

namespace attn::io {

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
///   kHfLlama (Hugging Face Llama, Mistral, Qwen2): q_proj.weight [num_heads*head_dim, d_in],
///                       k_proj.weight, v_proj.weight [num_kv_heads*head_dim, d_in], o_proj.weight
///                       [d_out, num_heads*head_dim], optional q/k/v_proj.bias (all three or
///                       none) and o_proj.bias; rope neox unless told otherwise
///   kGptNeox:           query_key_value.weight [3d, d] and .bias [3d] stored per head as
///                       [q_h, k_h, v_h] blocks of head_dim rows, dense.weight [d, d], dense.bias,
///                       optional `bias` mask [1, 1, n, n]; rope neox unless told otherwise
enum class Layout {
  kAuto,
  kSelfAttentionV1,
  kSelfAttentionV2,
  kCausalAttention,
  kMultiHeadWrapper,
  kMultiHeadAttention,
  kTorchMultiheadAttention,
  kGpt2,
  kHfLlama,
  kGptNeox,
};

/// Returns "auto", "v1", "v2", "causal", "wrapper", "mha", "torch-mha", "gpt2", "hf-llama" or
/// "gpt-neox".
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
/// The other fields override LayerConfig's field of the same name, else __metadata__'s key of
/// that name ("num_kv_heads", "head_dim", "rope" = none|neox|gptj, "rope_theta", "rope_dim",
/// "scale", "window", "alibi" = true|false, "softcap" > 0), else what the shapes imply (hf-llama:
/// head_dim = q_proj rows / num_heads, num_kv_heads = k_proj rows / head_dim), else the layout's
/// default (rope neox for hf-llama and gpt-neox, LayerConfig's defaults otherwise).
struct LayerOptions {
  Layout layout = Layout::kAuto;
  std::string prefix;
  std::optional<std::int64_t> num_heads;
  std::optional<std::int64_t> context_length;
  std::optional<bool> causal;
  std::optional<std::int64_t> num_kv_heads;
  std::optional<std::int64_t> head_dim;
  std::optional<Rope> rope;
  std::optional<double> rope_theta;
  std::optional<std::int64_t> rope_dim;
  std::optional<double> scale;
  std::optional<std::int64_t> window;
  std::optional<bool> alibi;
  std::optional<double> softcap;
  /// Keeps the weight matrices the file stores in this 16-bit type as 16-bit Tensors (their
  /// bits, rearranged by the layout as float32 values would be) instead of reading them as
  /// float32: attn::DType::kBf16 keeps BF16 tensors, kF16 keeps F16 tensors. Set it to
  /// RunOptions::weight_dtype when that is bf16 or f16: Engine::create then packs the file's
  /// bits with no float32 copy of the weights (the packed panels are the same bytes as from a
  /// float32 load). Tensors of other types, biases and masks are read as float32; unset (or
  /// kF32), every tensor is float32.
  std::optional<attn::DType> keep_16bit;
};

/// An attention layer read from a file.
struct Layer {
  LayerConfig config;  ///< context_length 0 when neither the options, the file nor a mask give it
  Weights weights;
  LayerLocation location;
  std::vector<std::string> tensors;  ///< the file's tensors that were read
  std::vector<std::string> notes;    ///< where each config value came from
};

/// Reads the layer at options.layout/prefix (see find_layer) into LayerConfig + Weights in
/// nn.Linear layout (the wrapper's heads stacked by rows, GPT-2's Conv1D weights transposed;
/// 16-bit weights only with options.keep_16bit, float32 otherwise). Masks
/// are checked to be the causal pattern. Errors name the file and tensor: a missing tensor, a shape
/// that disagrees with another or with the options, num_heads unknown for a multi-head layout
/// (kInvalidArgument: "pass num_heads"), a malformed __metadata__ value (kCorruptData).
ATTN_API Result<Layer> load_layer(const SafetensorsFile& file, const LayerOptions& options = {});

}  // namespace attn::io
