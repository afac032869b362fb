// Attention layers from named tensors held in memory (a PyTorch state dict, already float32),
// mapped onto LayerConfig + Weights exactly as attn::io::load_layer maps a safetensors file.
#pragma once

#include <span>
#include <string>

#include "attn/export.hpp"
#include "attn/io.hpp"
#include "attn/status.hpp"

namespace attn::io {

/// Builds a layer from `tensors` (name -> float32 view, e.g. a module's state_dict()) with the
/// same layout detection, mapping and checks as load_layer(): the chapter's names (W_query,
/// W_query.weight, heads.{i}.W_query.weight, out_proj.*, mask), nn.MultiheadAttention's
/// (in_proj_weight, in_proj_bias, out_proj.*) and GPT-2's ([attn.]c_attn.*, c_proj.*, bias).
/// Tensors are copied; the views need only live for the call. `name` stands for the file
/// name in messages. Errors: as load_layer, plus kInvalidArgument for an empty or duplicate
/// name, a null view with elements, or a rank over kMaxRank.
ATTN_API Result<Layer> load_layer_from_tensors(std::span<const NamedTensor> tensors,
                                               const LayerOptions& options = {},
                                               const std::string& name = "<state_dict>");

}  // namespace attn::io
