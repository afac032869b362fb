// Layout names, and finding an attention layer (its layout and prefix) from tensor names.
#include <algorithm>
#include <cctype>
#include <optional>
#include <set>

#include "attn/layer.hpp"
#include "io/file_bytes.hpp"

namespace attn::io {
namespace {

struct LayoutName {
  Layout layout;
  const char* name;
};

constexpr LayoutName kLayoutNames[] = {
    {Layout::kAuto, "auto"},
    {Layout::kSelfAttentionV1, "v1"},
    {Layout::kSelfAttentionV2, "v2"},
    {Layout::kCausalAttention, "causal"},
    {Layout::kMultiHeadWrapper, "wrapper"},
    {Layout::kMultiHeadAttention, "mha"},
    {Layout::kTorchMultiheadAttention, "torch-mha"},
    {Layout::kGpt2, "gpt2"},
    {Layout::kHfLlama, "hf-llama"},
    {Layout::kGptNeox, "gpt-neox"},
};

// The tensors whose presence directly under a prefix marks a layer of each layout.
std::vector<std::string_view> anchors(Layout layout) {
  switch (layout) {
    case Layout::kSelfAttentionV1:
      return {"W_query"};
    case Layout::kSelfAttentionV2:
    case Layout::kCausalAttention:
    case Layout::kMultiHeadAttention:
      return {"W_query.weight"};
    case Layout::kMultiHeadWrapper:
      return {"heads.0.W_query.weight"};
    case Layout::kTorchMultiheadAttention:
      return {"in_proj_weight"};
    case Layout::kGpt2:
      return {"attn.c_attn.weight", "c_attn.weight"};
    case Layout::kHfLlama:
      return {"q_proj.weight"};
    case Layout::kGptNeox:
      return {"query_key_value.weight"};
    case Layout::kAuto:
      break;
  }
  return {"in_proj_weight",         "attn.c_attn.weight",     "c_attn.weight",  "q_proj.weight",
          "query_key_value.weight", "heads.0.W_query.weight", "W_query.weight", "W_query"};
}

bool has(const SafetensorsFile& file, std::string_view prefix, std::string_view name) {
  return file.find(std::string(prefix) + std::string(name)) != nullptr;
}

// Returns the layout of the layer directly under `prefix`, judged by tensor names only.
std::optional<Layout> detect_at(const SafetensorsFile& file, std::string_view prefix) {
  if (has(file, prefix, "in_proj_weight")) return Layout::kTorchMultiheadAttention;
  if (has(file, prefix, "attn.c_attn.weight") || has(file, prefix, "c_attn.weight"))
    return Layout::kGpt2;
  if (has(file, prefix, "q_proj.weight")) return Layout::kHfLlama;
  if (has(file, prefix, "query_key_value.weight")) return Layout::kGptNeox;
  if (has(file, prefix, "heads.0.W_query.weight")) return Layout::kMultiHeadWrapper;
  if (has(file, prefix, "W_query.weight")) {
    if (has(file, prefix, "out_proj.weight")) return Layout::kMultiHeadAttention;
    if (has(file, prefix, "mask")) return Layout::kCausalAttention;
    return Layout::kSelfAttentionV2;
  }
  if (has(file, prefix, "W_query")) return Layout::kSelfAttentionV1;
  return std::nullopt;
}

bool has_anchor(const SafetensorsFile& file, Layout layout, std::string_view prefix) {
  for (std::string_view a : anchors(layout))
    if (has(file, prefix, a)) return true;
  return false;
}

// Orders "h.2." before "h.10.": digit runs compare as numbers.
bool natural_less(std::string_view a, std::string_view b) {
  std::size_t i = 0, j = 0;
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && digit(a[ie])) ++ie;
      while (je < b.size() && digit(b[je])) ++je;
      std::string_view na = a.substr(i, ie - i), nb = b.substr(j, je - j);
      while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::string list(const std::vector<std::string>& items, std::size_t max_items) {
  std::string s;
  for (std::size_t i = 0; i < items.size() && i < max_items; ++i)
    s += (i ? ", " : "") + ("'" + items[i] + "'");
  if (items.size() > max_items)
    s += ", ... (" + std::to_string(items.size() - max_items) + " more)";
  return s;
}

std::string anchor_names(Layout layout, std::string_view prefix) {
  std::vector<std::string> names;
  for (std::string_view a : anchors(layout)) names.push_back(std::string(prefix) + std::string(a));
  return list(names, 8);
}

Status invalid(const SafetensorsFile& file, const std::string& message) {
  return detail::file_error(ErrorCode::kInvalidArgument, file.name(), message);
}

}  // namespace

const char* to_string(Layout layout) noexcept {
  for (const LayoutName& l : kLayoutNames)
    if (l.layout == layout) return l.name;
  return "unknown";
}

Result<Layout> parse_layout(std::string_view name) {
  std::string names;
  for (const LayoutName& l : kLayoutNames) {
    if (name == l.name) return l.layout;
    names += (names.empty() ? "" : ", ") + std::string(l.name);
  }
  return Status(ErrorCode::kInvalidArgument,
                "unknown layout '" + std::string(name) + "' (expected one of: " + names + ")");
}

Result<LayerLocation> find_layer(const SafetensorsFile& file, Layout layout,
                                 std::string_view prefix_in) {
  return detail::guard(file.name(), [&]() -> Result<LayerLocation> {
    std::string prefix(prefix_in);
    if (!prefix.empty() && prefix.back() != '.') prefix += '.';
    // __metadata__["layout"] describes the file's layer; it decides where its tensors are.
    std::optional<Layout> meta_layout;
    if (auto it = file.metadata().find("layout");
        it != file.metadata().end() && layout == Layout::kAuto) {
      Result<Layout> meta = parse_layout(it->second);
      if (!meta.ok()) {
        return detail::file_error(ErrorCode::kCorruptData, file.name(),
                                  "__metadata__['layout']: " + meta.status().message());
      }
      if (meta.value() != Layout::kAuto) meta_layout = meta.value();
    }
    const std::string what = layout == Layout::kAuto
                                 ? "attention layer"
                                 : std::string("layer of layout ") + to_string(layout);

    // The layer directly under the prefix (the whole file when the prefix is empty).
    auto at = [&](const std::string& p) -> std::optional<Layout> {
      if (layout != Layout::kAuto)
        return has_anchor(file, layout, p) ? std::optional<Layout>(layout) : std::nullopt;
      if (meta_layout && has_anchor(file, *meta_layout, p)) return meta_layout;
      return detect_at(file, p);
    };
    if (std::optional<Layout> l = at(prefix)) return LayerLocation{*l, prefix};

    if (!prefix.empty()) {
      std::vector<std::string> under;
      for (const TensorInfo& t : file.tensors())
        if (t.name.starts_with(prefix)) under.push_back(t.name);
      if (under.empty()) return invalid(file, "no tensor name starts with prefix '" + prefix + "'");
      return invalid(file, "found no " + what + " under prefix '" + prefix +
                               "': expected a tensor such as " + anchor_names(layout, prefix) +
                               "; the names there are " + list(under, 8));
    }

    // No layer at the top level: look for layers below prefixes (e.g. h.0., transformer.h.3.).
    std::set<std::string> found;
    for (const TensorInfo& t : file.tensors()) {
      for (std::string_view a : anchors(layout)) {
        if (t.name.size() > a.size() && t.name.ends_with(a) &&
            t.name[t.name.size() - a.size() - 1] == '.') {
          found.insert(t.name.substr(0, t.name.size() - a.size()));
        }
      }
    }
    std::vector<std::string> prefixes;
    for (const std::string& p : found) {
      // "h.0.attn." is inside the layer "h.0." (GPT-2), "m.heads.1." inside "m." (the wrapper).
      const bool nested = std::any_of(found.begin(), found.end(), [&](const std::string& q) {
        return q.size() < p.size() && p.starts_with(q) && at(q).has_value();
      });
      if (!nested && at(p)) prefixes.push_back(p);
    }
    std::sort(prefixes.begin(), prefixes.end(), natural_less);
    if (prefixes.size() == 1) return LayerLocation{*at(prefixes[0]), prefixes[0]};
    if (prefixes.empty()) {
      std::vector<std::string> names;
      for (const TensorInfo& t : file.tensors()) names.push_back(t.name);
      return invalid(file, "found no " + what + ": expected tensors named like " +
                               anchor_names(layout, "") +
                               " (optionally under a prefix such as h.0.); the file holds " +
                               std::to_string(names.size()) + " tensors: " + list(names, 8));
    }
    return invalid(file, "holds " + std::to_string(prefixes.size()) +
                             " attention layers; choose one with a prefix (" + list(prefixes, 12) +
                             ")");
  });
}

}  // namespace attn::io
