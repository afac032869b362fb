// A layer's config beyond the tensor shapes: num_heads, context_length, causal, num_kv_heads,
// head_dim, rope, rope_theta, rope_dim, scale, window, alibi and softcap from the options, the
// tensors,
// __metadata__ or the layout's default.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>

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

Status corrupt(const SafetensorsFile& file, const char* key, const std::string& value,
               const char* what) {
  return detail::file_error(
      ErrorCode::kCorruptData, file.name(),
      std::string("__metadata__['") + key + "'] = '" + value + "' is not " + what);
}

// Returns the integer >= min in metadata[key], nothing when absent.
Result<std::optional<std::int64_t>> metadata_size(const SafetensorsFile& file, const char* key,
                                                  std::int64_t min) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return std::optional<std::int64_t>();
  const std::string& s = it->second;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min)
    return corrupt(file, key, s, min > 0 ? "a positive integer" : "an integer >= 0");
  return std::optional<std::int64_t>(v);
}

// Returns the finite number > 0 in metadata[key], nothing when absent.
Result<std::optional<double>> metadata_positive(const SafetensorsFile& file, const char* key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return std::optional<double>();
  const std::string& s = it->second;
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v) || v <= 0)
    return corrupt(file, key, s, "a finite number > 0");
  return std::optional<double>(v);
}

Result<std::optional<Rope>> metadata_rope(const SafetensorsFile& file) {
  auto it = file.metadata().find("rope");
  if (it == file.metadata().end()) return std::optional<Rope>();
  Result<Rope> r = parse_rope(it->second);
  if (!r.ok()) return corrupt(file, "rope", it->second, "none, neox or gptj");
  return std::optional<Rope>(r.value());
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}
std::string number(std::int64_t v) { return std::to_string(v); }
std::string number(Rope r) { return to_string(r); }
std::string number(bool b) { return b ? "true" : "false"; }

// Sets `dst` from the options, else the metadata; returns where it came from ("" for neither).
template <class T, class U>
std::string pick(const std::optional<T>& given, const std::optional<T>& meta, U& dst) {
  if (given) {
    dst = *given;
    return "from the options";
  }
  if (meta) {
    dst = *meta;
    return "from __metadata__";
  }
  return "";
}

// Sets num_kv_heads, head_dim, rope, rope_theta, rope_dim, scale, window, alibi and softcap (see
// resolve_config).
Status resolve_shape(const LayerReader& r, const LayerOptions& o, const Found& found,
                     const std::string& heads_source, Layer& layer) {
  LayerConfig& c = layer.config;
  const SafetensorsFile& file = r.file();
  const Layout layout = layer.location.layout;
  auto kv = metadata_size(file, "num_kv_heads", 1);
  auto hd = metadata_size(file, "head_dim", 1);
  auto rd = metadata_size(file, "rope_dim", 1);
  auto win = metadata_size(file, "window", 0);
  auto theta = metadata_positive(file, "rope_theta");
  auto scale = metadata_positive(file, "scale");
  auto rope = metadata_rope(file);
  auto softcap = metadata_positive(file, "softcap");
  Result<int> alibi_flag = metadata_bool(file, "alibi");
  for (const Status& s : {kv.status(), hd.status(), rd.status(), win.status(), theta.status(),
                          scale.status(), rope.status(), softcap.status(), alibi_flag.status()})
    if (!s.ok()) return s;
  std::optional<bool> alibi;
  if (*alibi_flag >= 0) alibi.emplace(*alibi_flag == 1);
  auto note = [&](const char* key, const auto& value, const std::string& source) {
    if (!source.empty())
      layer.notes.push_back(std::string(key) + " = " + number(value) + " (" + source + ")");
  };
  const std::string heads_text =
      "num_heads = " + std::to_string(c.num_heads) + " (" + heads_source + ")";

  std::string src = pick(o.head_dim, *hd, c.head_dim);
  if (src.empty() && found.q_dim > 0) {
    if (c.num_heads <= 0 || found.q_dim % c.num_heads != 0) {
      return r.fail(ErrorCode::kInvalidArgument, "tensor '" + r.full(found.q_name) + "' has " +
                                                     std::to_string(found.q_dim) +
                                                     " rows, not a multiple of " + heads_text);
    }
    c.head_dim = found.q_dim / c.num_heads;
    src = "rows of '" + r.full(found.q_name) + "' / num_heads";
  }
  note("head_dim", c.head_dim, src);
  if (found.q_dim > 0 && c.q_dim() != found.q_dim) {
    return r.fail(ErrorCode::kInvalidArgument,
                  "head_dim = " + std::to_string(c.head_dim) + " (" + src + ") and " + heads_text +
                      " give " + std::to_string(c.q_dim()) + " query rows but tensor '" +
                      r.full(found.q_name) + "' has " + std::to_string(found.q_dim));
  }

  src = pick(o.num_kv_heads, *kv, c.num_kv_heads);
  const std::int64_t head_dim = c.resolved_head_dim();
  if (src.empty() && found.kv_dim > 0) {
    if (head_dim <= 0 || found.kv_dim % head_dim != 0) {
      return r.fail(ErrorCode::kInvalidArgument,
                    "tensor '" + r.full(found.kv_name) + "' has " + std::to_string(found.kv_dim) +
                        " rows, not a multiple of head_dim = " + std::to_string(head_dim));
    }
    c.num_kv_heads = found.kv_dim / head_dim;
    src = "rows of '" + r.full(found.kv_name) + "' / head_dim";
  }
  note("num_kv_heads", c.num_kv_heads, src);
  if (found.kv_dim > 0 && c.kv_dim() != found.kv_dim) {
    return r.fail(ErrorCode::kInvalidArgument,
                  "num_kv_heads = " + std::to_string(c.kv_heads()) + " (" +
                      (src.empty() ? std::string("num_heads") : src) + ") of head_dim " +
                      std::to_string(head_dim) + " give " + std::to_string(c.kv_dim()) +
                      " key rows but tensor '" + r.full(found.kv_name) + "' has " +
                      std::to_string(found.kv_dim) +
                      (head_dim > 0 && found.kv_dim % head_dim == 0
                           ? " (" + std::to_string(found.kv_dim / head_dim) + " kv heads)"
                           : std::string()));
  }

  src = pick(o.rope, *rope, c.rope);
  if (src.empty() && (layout == Layout::kHfLlama || layout == Layout::kGptNeox)) {
    c.rope = Rope::kNeox;
    src = std::string("default of layout ") + to_string(layout);
  }
  note("rope", c.rope, src);
  note("rope_theta", c.rope_theta, pick(o.rope_theta, *theta, c.rope_theta));
  note("rope_dim", c.rope_dim, pick(o.rope_dim, *rd, c.rope_dim));
  note("scale", c.scale, pick(o.scale, *scale, c.scale));
  note("window", c.window, pick(o.window, *win, c.window));
  note("alibi", c.alibi, pick(o.alibi, alibi, c.alibi));
  note("softcap", c.softcap, pick(o.softcap, *softcap, c.softcap));
  return {};
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
  Result<std::optional<std::int64_t>> meta_head_dim = metadata_size(file, "head_dim", 1);
  if (!meta_head_dim.ok()) return meta_head_dim.status();
  const std::optional<std::int64_t> given_head_dim = o.head_dim ? o.head_dim : *meta_head_dim;

  const bool multi_head = layout == Layout::kMultiHeadAttention ||
                          layout == Layout::kTorchMultiheadAttention || layout == Layout::kGpt2 ||
                          layout == Layout::kHfLlama || layout == Layout::kGptNeox;
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
  } else if (found.q_dim > 0 && given_head_dim) {
    if (found.q_dim % *given_head_dim != 0) {
      return r.fail(ErrorCode::kInvalidArgument,
                    "head_dim = " + std::to_string(*given_head_dim) + " does not divide the " +
                        std::to_string(found.q_dim) + " rows of tensor '" + r.full(found.q_name) +
                        "'");
    }
    c.num_heads = found.q_dim / *given_head_dim;
    layer.notes.push_back("num_heads = " + std::to_string(c.num_heads) + " (rows of '" +
                          r.full(found.q_name) + "' / head_dim)");
  } else if (multi_head) {
    return r.fail(ErrorCode::kInvalidArgument,
                  std::string("num_heads is not recorded in the file (layout ") +
                      to_string(layout) +
                      " does not determine it and __metadata__ has no 'num_heads'): pass it (attn: "
                      "--heads N" +
                      (found.q_dim > 0 ? " or --head-dim N" : "") +
                      "; "
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
  const std::string& heads_note = layer.notes.front();
  std::string heads_source = heads_note.substr(heads_note.find('(') + 1);
  heads_source.pop_back();
  return resolve_shape(r, o, found, heads_source, layer);
}

}  // namespace attn::io::detail
