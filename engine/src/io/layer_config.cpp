// A layer's config beyond the tensor shapes: num_heads, context_length and causal from the
// options, the tensors, __metadata__ or the layout's default.
#include <charconv>

#include "io/layer_reader.hpp"

namespace attn::io::detail {
namespace {

// Returns the positive integer in metadata[key], 0 when absent.
Result<std::int64_t> metadata_int(const SafetensorsFile& file, const char* key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return std::int64_t{0};
  const std::string& s = it->second;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) {
    return detail::file_error(
        ErrorCode::kCorruptData, file.name(),
        std::string("__metadata__['") + key + "'] = '" + s + "' is not a positive integer");
  }
  return v;
}

Result<int> metadata_bool(const SafetensorsFile& file, const char* key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return -1;
  const std::string& s = it->second;
  if (s == "true" || s == "True" || s == "1") return 1;
  if (s == "false" || s == "False" || s == "0") return 0;
  return detail::file_error(
      ErrorCode::kCorruptData, file.name(),
      std::string("__metadata__['") + key + "'] = '" + s + "' is not true or false");
}

}  // namespace

// The precedence is documented in layer_reader.hpp.
Status resolve_config(const LayerReader& r, const LayerOptions& o, const Found& found,
                      Layer& layer) {
  LayerConfig& c = layer.config;
  const Layout layout = layer.location.layout;
  const SafetensorsFile& file = r.file();
  Result<std::int64_t> meta_heads = metadata_int(file, "num_heads");
  Result<std::int64_t> meta_ctx = metadata_int(file, "context_length");
  Result<int> meta_causal = metadata_bool(file, "causal");
  if (!meta_heads.ok()) return meta_heads.status();
  if (!meta_ctx.ok()) return meta_ctx.status();
  if (!meta_causal.ok()) return meta_causal.status();

  const bool multi_head = layout == Layout::kMultiHeadAttention ||
                          layout == Layout::kTorchMultiheadAttention || layout == Layout::kGpt2;
  if (o.num_heads) {
    c.num_heads = *o.num_heads;
    layer.notes.push_back("num_heads = " + std::to_string(c.num_heads) + " (from the options)");
    if (found.num_heads != 0 && c.num_heads != found.num_heads) {
      return r.fail(ErrorCode::kInvalidArgument,
                    "num_heads = " + std::to_string(c.num_heads) + " was given but the file has " +
                        std::to_string(found.num_heads) + " heads (heads.0 .. heads." +
                        std::to_string(found.num_heads - 1) + ")");
    }
  } else if (found.num_heads != 0) {
    if (*meta_heads != 0 && *meta_heads != found.num_heads) {
      return r.fail(ErrorCode::kCorruptData,
                    "__metadata__['num_heads'] = " + std::to_string(*meta_heads) +
                        " but the file has " + std::to_string(found.num_heads) + " heads");
    }
    c.num_heads = found.num_heads;
    layer.notes.push_back("num_heads = " + std::to_string(c.num_heads) +
                          " (counted from heads.{i})");
  } else if (*meta_heads != 0 && multi_head) {
    // Only multi-head layouts take it: one head of a wrapper (--prefix heads.1) has one head.
    c.num_heads = *meta_heads;
    layer.notes.push_back("num_heads = " + std::to_string(c.num_heads) + " (from __metadata__)");
  } else if (multi_head) {
    return r.fail(ErrorCode::kInvalidArgument,
                  std::string("num_heads is not recorded in the file (layout ") +
                      to_string(layout) +
                      " does not determine it and __metadata__ has no 'num_heads'): pass it (attn: "
                      "--heads N; "
                      "GPT-2 small (124M) has 12)");
  } else {
    c.num_heads = 1;
    layer.notes.push_back("num_heads = 1 (layout " + std::string(to_string(layout)) +
                          " has one head)");
  }

  if (o.context_length) {
    c.context_length = *o.context_length;
    layer.notes.push_back("context_length = " + std::to_string(c.context_length) +
                          " (from the options)");
  } else if (found.context_length != 0) {
    c.context_length = found.context_length;
    layer.notes.push_back("context_length = " + std::to_string(c.context_length) + " (from " +
                          found.context_source + ")");
  } else if (*meta_ctx != 0) {
    c.context_length = *meta_ctx;
    layer.notes.push_back("context_length = " + std::to_string(c.context_length) +
                          " (from __metadata__)");
  } else {
    c.context_length = 0;
    layer.notes.push_back(
        "context_length unknown (not in the file; attn run uses the input's seq_len)");
  }

  // Unset, the mask is the variant's (causal except for v1 and v2); a value from the options
  // or the metadata that contradicts the variant is refused by validate() with both named.
  const auto mask_of = [](bool causal) { return causal ? Mask::kCausal : Mask::kNone; };
  if (o.causal) {
    c.mask = mask_of(*o.causal);
    layer.notes.push_back(std::string("causal = ") + (c.causal() ? "true" : "false") +
                          " (from the options)");
  } else if (*meta_causal >= 0) {
    c.mask = mask_of(*meta_causal == 1);
    layer.notes.push_back(std::string("causal = ") + (c.causal() ? "true" : "false") +
                          " (from __metadata__)");
  } else {
    c.mask = Mask::kVariant;
    layer.notes.push_back(std::string("causal = ") + (c.causal() ? "true" : "false") +
                          " (default of layout " + to_string(layout) + ")");
  }
  return {};
}

}  // namespace attn::io::detail
