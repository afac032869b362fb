// Options shared by `attn run` and `attn info`: which layer of a weights file to read and
// what the file may not say (heads, context length, causality).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "attn/layer.hpp"
#include "cli_flags.hpp"

namespace attn::tools {

/// The layer-selection options as parsed from the command line.
struct LayerArgs {
  std::string layout = "auto";
  std::string prefix;
  std::int64_t num_heads = 0;
  std::int64_t context_length = 0;
  bool causal = true;
  CLI::Option* num_heads_opt = nullptr;
  CLI::Option* context_opt = nullptr;
  CLI::Option* causal_opt = nullptr;
  LayerShapeFlags shape;

  /// Declares --layout, --prefix, --num-heads (alias --heads), --context-length,
  /// --causal/--no-causal and the LayerShapeFlags on `sub`.
  void add_to(CLI::App* sub) {
    sub->add_option(
           "--layout", layout,
           "Tensor layout: auto (from __metadata__ or the names), v1, v2, causal, wrapper, mha "
           "(the chapter's classes), torch-mha (nn.MultiheadAttention), gpt2, hf-llama (Hugging "
           "Face Llama/Mistral/Qwen2), gpt-neox")
        ->check(CLI::Validator(
            [](std::string& name) {
              Result<io::Layout> l = io::parse_layout(name);
              return l.ok() ? std::string() : l.status().message();
            },
            "LAYOUT"))
        ->capture_default_str();
    sub->add_option("--prefix", prefix,
                    "Read the layer whose tensor names start with this, e.g. h.3 (GPT-2 block 3)");
    num_heads_opt = sub->add_option("--num-heads,--heads", num_heads,
                                    "num_heads (else __metadata__['num_heads'])")
                        ->check(in_range(1, kMaxSizeFlag));
    context_opt =
        sub->add_option("--context-length", context_length,
                        "Most tokens per sequence (else the mask buffer or __metadata__; attn run "
                        "falls back to the input's seq_len)")
            ->check(in_range(1, kMaxSizeFlag));
    causal_opt =
        sub->add_flag("--causal,!--no-causal", causal,
                      "Force causal masking on or off (else __metadata__['causal'], else the "
                      "layout's default: off for v1/v2, on for the others)");
    shape.add_to(sub);
  }

  /// Returns the library's options; fails on an unknown layout name.
  Result<io::LayerOptions> options() const {
    Result<io::Layout> l = io::parse_layout(layout);
    if (!l.ok()) return l.status();
    io::LayerOptions o;
    o.layout = l.value();
    o.prefix = prefix;
    if (num_heads_opt->count() > 0) o.num_heads = num_heads;
    if (context_opt->count() > 0) o.context_length = context_length;
    if (causal_opt->count() > 0) o.causal = causal;
    shape.apply(o);
    return o;
  }
};

/// Returns e.g. "variant mha, d_in 768, d_out 768, num_heads 12 (head_dim 64), num_kv_heads
/// 12, context_length 1024, qkv_bias true, causal true, rope none, scale 0.125, window 0, alibi
/// false, softcap 0"
/// (with rope: "rope neox (theta 500000, rope_dim 64)").
inline std::string describe(const LayerConfig& c) {
  std::string rope = to_string(c.rope);
  if (c.rope != Rope::kNone) {
    rope += " (theta " + CLI::detail::to_string(c.rope_theta) + ", rope_dim " +
            std::to_string(c.resolved_rope_dim()) + ")";
  }
  return std::string("variant ") + to_string(c.variant) + ", d_in " + std::to_string(c.d_in) +
         ", d_out " + std::to_string(c.d_out) + ", num_heads " + std::to_string(c.num_heads) +
         " (head_dim " + std::to_string(c.resolved_head_dim()) + "), num_kv_heads " +
         std::to_string(c.kv_heads()) + ", context_length " +
         (c.context_length > 0 ? std::to_string(c.context_length) : std::string("unknown")) +
         ", qkv_bias " + (c.qkv_bias ? "true" : "false") + ", causal " +
         (c.causal() ? "true" : "false") + ", rope " + rope + ", scale " +
         CLI::detail::to_string(c.resolved_scale()) + ", window " + std::to_string(c.window) +
         ", alibi " + (c.alibi ? "true" : "false") + ", softcap " +
         CLI::detail::to_string(c.softcap);
}

}  // namespace attn::tools
