// Reads one attention layer from a safetensors file into LayerConfig + Weights (nn.Linear layout):
// the chapter's classes, nn.MultiheadAttention, GPT-2's Conv1D attention, Hugging Face
// Llama/Mistral/Qwen2 and GPT-NeoX attention.
#include <algorithm>
#include <charconv>

#include "attn/layer.hpp"
#include "io/file_bytes.hpp"
#include "io/layer_reader.hpp"

namespace attn::io {
namespace {

using detail::Found;
using detail::LayerReader;

std::string dims(std::int64_t a, std::int64_t b) { return Shape{a, b}.to_string(); }
std::string dims(std::int64_t a) { return Shape{a}.to_string(); }

// Returns a zero-filled tensor of `shape` in src's dtype after fn(src_elements, out_elements),
// both float* or both std::uint16_t*: the layouts rearrange 16-bit weights exactly as floats.
template <class Fn>
Tensor rearranged(const Tensor& src, Shape shape, Fn fn) {
  Tensor out(shape, src.dtype());
  if (src.dtype() == attn::DType::kF32) {
    fn(src.data(), out.data());
  } else {
    fn(src.bits().data(), out.bits().data());
  }
  return out;
}

// Returns rows [row0, row0 + rows) of a row-major [*, cols] tensor.
Tensor slice_rows(const Tensor& t, std::int64_t row0, std::int64_t rows, std::int64_t cols) {
  return rearranged(t, Shape{rows, cols},
                    [&](const auto* s, auto* d) { std::copy_n(s + row0 * cols, rows * cols, d); });
}

// Returns elements [begin, begin + n) of a rank-1 tensor.
Tensor slice_vector(const Tensor& t, std::int64_t begin, std::int64_t n) {
  return Tensor(Shape{n}, std::vector<float>(t.data() + begin, t.data() + begin + n));
}

// Returns columns [col0, col0 + n) of an [r, c] tensor, transposed: [n, r]. This turns a
// Conv1D weight (y = x W) into nn.Linear's (y = x Wᵀ).
Tensor columns_transposed(const Tensor& t, std::int64_t col0, std::int64_t n) {
  const std::int64_t r = t.shape()[0], c = t.shape()[1];
  return rearranged(t, Shape{n, r}, [&](const auto* s, auto* d) {
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < n; ++j) d[j * r + i] = s[i * c + col0 + j];
  });
}

// Checks a causal mask and returns its size n. Chapter: [n, n] = triu(ones, 1) (1 = hidden).
// GPT-2: [1, 1, n, n] = tril(ones) (1 = visible).
Result<std::int64_t> check_mask(LayerReader& r, std::string_view name, bool gpt2) {
  Result<Tensor> m = r.get(name);
  if (!m.ok()) return m.status();
  const Shape& s = m->shape();
  const bool shape_ok = gpt2 ? s.rank() == 4 && s[0] == 1 && s[1] == 1 && s[2] == s[3]
                             : s.rank() == 2 && s[0] == s[1];
  if (!shape_ok)
    return r.shape_error(name, s, gpt2 ? "[1, 1, n, n]" : "[n, n] (context_length squared)");
  const std::int64_t n = s[-1];
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      const float want = gpt2 ? (j <= i ? 1.0f : 0.0f) : (j > i ? 1.0f : 0.0f);
      if (m->data()[i * n + j] != want) {
        return r.fail(ErrorCode::kUnsupported,
                      "tensor '" + r.full(name) + "' is not the causal mask " +
                          (gpt2 ? "tril(ones(n, n))" : "triu(ones(n, n), diagonal=1)") +
                          ": element [" + std::to_string(i) + ", " + std::to_string(j) + "] is " +
                          std::to_string(m->data()[i * n + j]) +
                          "; only causal masks are supported");
      }
    }
  }
  return n;
}

// Reads q, k, v as nn.Linear weights [d_out, d_in] named <q|k|v><suffix> plus optional biases.
Status read_linear_qkv(LayerReader& r, const std::string& head, LayerConfig& c, Weights& w) {
  const std::string q = head + "W_query.weight", k = head + "W_key.weight",
                    v = head + "W_value.weight";
  Result<Tensor> wq = r.get_matrix(q, -1, -1, "[d_out, d_in]");
  if (!wq.ok()) return wq.status();
  const std::int64_t d_out = wq->shape()[0], d_in = wq->shape()[1];
  const std::string same = dims(d_out, d_in) + " like '" + r.full(q) + "'";
  Result<Tensor> wk = r.get_matrix(k, d_out, d_in, same);
  if (!wk.ok()) return wk.status();
  Result<Tensor> wv = r.get_matrix(v, d_out, d_in, same);
  if (!wv.ok()) return wv.status();
  w.w_query = std::move(wq.value());
  w.w_key = std::move(wk.value());
  w.w_value = std::move(wv.value());
  c.d_in = d_in;
  c.d_out = d_out;
  const std::string names[] = {head + "W_query.bias", head + "W_key.bias", head + "W_value.bias"};
  const int biases = int(r.has(names[0])) + int(r.has(names[1])) + int(r.has(names[2]));
  c.qkv_bias = biases > 0;
  if (biases == 0) return {};
  Tensor* dst[] = {&w.b_query, &w.b_key, &w.b_value};
  for (int i = 0; i < 3; ++i) {
    Result<Tensor> b =
        r.get_vector(names[i], d_out, dims(d_out) + " (qkv_bias: all three or none)");
    if (!b.ok()) return b.status();
    *dst[i] = std::move(b.value());
  }
  return {};
}

Status read_v1(LayerReader& r, LayerConfig& c, Weights& w) {
  Result<Tensor> wq =
      r.get_matrix("W_query", -1, -1, "[d_in, d_out] (SelfAttention_v1: q = x W_query)");
  if (!wq.ok()) return wq.status();
  const std::int64_t d_in = wq->shape()[0], d_out = wq->shape()[1];
  const std::string same = dims(d_in, d_out) + " like '" + r.full("W_query") + "'";
  Result<Tensor> wk = r.get_matrix("W_key", d_in, d_out, same);
  if (!wk.ok()) return wk.status();
  Result<Tensor> wv = r.get_matrix("W_value", d_in, d_out, same);
  if (!wv.ok()) return wv.status();
  Result<Weights> built = Weights::from_input_major(wq.value(), wk.value(), wv.value());
  if (!built.ok()) return r.fail(built.status().code(), built.status().message());
  w = std::move(built.value());
  c.d_in = d_in;
  c.d_out = d_out;
  return {};
}

Status read_out_proj(LayerReader& r, std::string_view weight, std::string_view bias, bool conv1d,
                     Weights& w, std::int64_t d_out) {
  Result<Tensor> wo = r.get_matrix(weight, d_out, d_out, dims(d_out, d_out));
  if (!wo.ok()) return wo.status();
  w.w_out = conv1d ? columns_transposed(wo.value(), 0, d_out) : std::move(wo.value());
  if (r.has(bias)) {
    Result<Tensor> bo = r.get_vector(bias, d_out, dims(d_out));
    if (!bo.ok()) return bo.status();
    w.b_out = std::move(bo.value());
  }
  return {};
}

Status read_wrapper(LayerReader& r, LayerConfig& c, Weights& w, Found& found) {
  std::int64_t heads = 0;
  while (r.has("heads." + std::to_string(heads) + ".W_query.weight")) ++heads;
  // A gap (heads.0, heads.2) would silently drop heads: report it.
  const std::string heads_prefix = r.full("heads.");
  for (const TensorInfo& t : r.file().tensors()) {
    if (!t.name.starts_with(heads_prefix)) continue;
    std::int64_t i = -1;
    const char* p = t.name.data() + heads_prefix.size();
    auto [end, ec] = std::from_chars(p, t.name.data() + t.name.size(), i);
    if (ec == std::errc() && i >= heads) {
      return r.fail(ErrorCode::kInvalidArgument,
                    "tensor '" + t.name + "' belongs to head " + std::to_string(i) + " but '" +
                        r.full("heads." + std::to_string(heads) + ".W_query.weight") +
                        "' is missing");
    }
  }
  std::vector<Weights> parts(static_cast<std::size_t>(heads));
  LayerConfig head0;
  for (std::int64_t h = 0; h < heads; ++h) {
    const std::string head = "heads." + std::to_string(h) + ".";
    LayerConfig ch;
    if (Status s = read_linear_qkv(r, head, ch, parts[h]); !s.ok()) return s;
    if (h == 0) head0 = ch;
    if (ch.d_in != head0.d_in || ch.d_out != head0.d_out || ch.qkv_bias != head0.qkv_bias) {
      return r.fail(ErrorCode::kInvalidArgument,
                    "head " + std::to_string(h) + " differs from head 0: W_query.weight " +
                        dims(ch.d_out, ch.d_in) + (ch.qkv_bias ? " with" : " without") +
                        " bias vs " + dims(head0.d_out, head0.d_in) +
                        (head0.qkv_bias ? " with" : " without") + " bias");
    }
    if (r.has(head + "mask")) {
      Result<std::int64_t> n = check_mask(r, head + "mask", false);
      if (!n.ok()) return n.status();
      if (found.context_length != 0 && *n != found.context_length) {
        return r.fail(ErrorCode::kInvalidArgument, "tensor '" + r.full(head + "mask") + "' is " +
                                                       std::to_string(*n) +
                                                       " wide but an earlier head's mask is " +
                                                       std::to_string(found.context_length));
      }
      found.context_length = *n;
      found.context_source = "the mask buffer '" + r.full(head + "mask") + "'";
    }
  }
  const std::int64_t head_dim = head0.d_out;
  c.d_in = head0.d_in;
  c.d_out = head_dim * heads;
  c.qkv_bias = head0.qkv_bias;
  found.num_heads = heads;
  // Heads stored in one 16-bit type stay in it; a mix of types is stacked as float32.
  auto stack = [&](Tensor Weights::*member, bool matrix) {
    const Shape shape = matrix ? Shape{c.d_out, c.d_in} : Shape{c.d_out};
    const attn::DType type = parts.empty() ? attn::DType::kF32 : (parts[0].*member).dtype();
    const bool same = std::all_of(parts.begin(), parts.end(),
                                  [&](const Weights& p) { return (p.*member).dtype() == type; });
    Tensor out(shape, same ? type : attn::DType::kF32);
    std::int64_t at = 0;
    for (const Weights& p : parts) {
      const Tensor& t = p.*member;
      if (out.dtype() != attn::DType::kF32) {
        std::copy(t.bits().begin(), t.bits().end(), out.bits().begin() + at);
      } else if (t.dtype() == attn::DType::kF32) {
        std::copy(t.values().begin(), t.values().end(), out.values().begin() + at);
      } else {
        const Tensor f = t.to_f32();
        std::copy(f.values().begin(), f.values().end(), out.values().begin() + at);
      }
      at += t.numel();
    }
    return out;
  };
  w.w_query = stack(&Weights::w_query, true);
  w.w_key = stack(&Weights::w_key, true);
  w.w_value = stack(&Weights::w_value, true);
  if (c.qkv_bias) {
    w.b_query = stack(&Weights::b_query, false);
    w.b_key = stack(&Weights::b_key, false);
    w.b_value = stack(&Weights::b_value, false);
  }
  return {};
}

Status read_torch_mha(LayerReader& r, LayerConfig& c, Weights& w) {
  for (const char* name : {"q_proj_weight", "bias_k", "bias_v"}) {
    if (r.has(name)) {
      return r.fail(ErrorCode::kUnsupported,
                    "tensor '" + r.full(name) +
                        "': nn.MultiheadAttention with kdim/vdim != embed_dim or "
                        "add_bias_kv=True is not supported");
    }
  }
  Result<Tensor> in = r.get_matrix("in_proj_weight", -1, -1, "[3 * embed_dim, embed_dim]");
  if (!in.ok()) return in.status();
  const std::int64_t d = in->shape()[1];
  if (in->shape()[0] != 3 * d) return r.shape_error("in_proj_weight", in->shape(), dims(3 * d, d));
  c.d_in = c.d_out = d;
  w.w_query = slice_rows(in.value(), 0, d, d);
  w.w_key = slice_rows(in.value(), d, d, d);
  w.w_value = slice_rows(in.value(), 2 * d, d, d);
  c.qkv_bias = r.has("in_proj_bias");
  if (c.qkv_bias) {
    Result<Tensor> b = r.get_vector("in_proj_bias", 3 * d, dims(3 * d));
    if (!b.ok()) return b.status();
    w.b_query = slice_vector(b.value(), 0, d);
    w.b_key = slice_vector(b.value(), d, d);
    w.b_value = slice_vector(b.value(), 2 * d, d);
  }
  return read_out_proj(r, "out_proj.weight", "out_proj.bias", false, w, d);
}

Status read_gpt2(LayerReader& r, LayerConfig& c, Weights& w, Found& found) {
  const std::string sub = r.has("attn.c_attn.weight") ? "attn." : "";
  Result<Tensor> qkv =
      r.get_matrix(sub + "c_attn.weight", -1, -1, "[d, 3 * d] (Conv1D: y = x W + b)");
  if (!qkv.ok()) return qkv.status();
  const std::int64_t d_in = qkv->shape()[0], d_out = qkv->shape()[1] / 3;
  if (qkv->shape()[1] % 3 != 0 || d_out == 0) {
    return r.shape_error(sub + "c_attn.weight", qkv->shape(), "[d, 3 * d] (Conv1D: y = x W + b)");
  }
  c.d_in = d_in;
  c.d_out = d_out;
  w.w_query = columns_transposed(qkv.value(), 0, d_out);
  w.w_key = columns_transposed(qkv.value(), d_out, d_out);
  w.w_value = columns_transposed(qkv.value(), 2 * d_out, d_out);
  c.qkv_bias = r.has(sub + "c_attn.bias");
  if (c.qkv_bias) {
    Result<Tensor> b = r.get_vector(sub + "c_attn.bias", 3 * d_out, dims(3 * d_out));
    if (!b.ok()) return b.status();
    w.b_query = slice_vector(b.value(), 0, d_out);
    w.b_key = slice_vector(b.value(), d_out, d_out);
    w.b_value = slice_vector(b.value(), 2 * d_out, d_out);
  }
  if (Status s = read_out_proj(r, sub + "c_proj.weight", sub + "c_proj.bias", true, w, d_out);
      !s.ok())
    return s;
  // Hugging Face's GPT2Attention keeps its causal mask as the buffer `bias`.
  if (r.has(sub + "bias")) {
    Result<std::int64_t> n = check_mask(r, sub + "bias", true);
    if (!n.ok()) return n.status();
    found.context_length = *n;
    found.context_source = "the mask buffer '" + r.full(sub + "bias") + "'";
  }
  return {};
}

// Hugging Face LlamaAttention (also Mistral, Qwen2): separate projections, k/v possibly
// narrower (grouped-query). head_dim and num_kv_heads follow from the rows in resolve_config.
Status read_hf_llama(LayerReader& r, LayerConfig& c, Weights& w, Found& found) {
  Result<Tensor> wq = r.get_matrix("q_proj.weight", -1, -1, "[num_heads * head_dim, d_in]");
  if (!wq.ok()) return wq.status();
  const std::int64_t q_dim = wq->shape()[0], d_in = wq->shape()[1];
  Result<Tensor> wk = r.get_matrix("k_proj.weight", -1, d_in,
                                   "[num_kv_heads * head_dim, " + std::to_string(d_in) +
                                       "] (d_in of '" + r.full("q_proj.weight") + "')");
  if (!wk.ok()) return wk.status();
  const std::int64_t kv_dim = wk->shape()[0];
  Result<Tensor> wv = r.get_matrix("v_proj.weight", kv_dim, d_in,
                                   dims(kv_dim, d_in) + " like '" + r.full("k_proj.weight") + "'");
  if (!wv.ok()) return wv.status();
  Result<Tensor> wo =
      r.get_matrix("o_proj.weight", -1, q_dim,
                   "[d_out, " + std::to_string(q_dim) + "] (columns: the rows of '" +
                       r.full("q_proj.weight") + "')");
  if (!wo.ok()) return wo.status();
  c.d_in = d_in;
  c.d_out = wo->shape()[0];
  w.w_query = std::move(wq.value());
  w.w_key = std::move(wk.value());
  w.w_value = std::move(wv.value());
  w.w_out = std::move(wo.value());
  const char* names[] = {"q_proj.bias", "k_proj.bias", "v_proj.bias"};
  const int biases = int(r.has(names[0])) + int(r.has(names[1])) + int(r.has(names[2]));
  c.qkv_bias = biases > 0;
  if (c.qkv_bias) {
    Tensor* dst[] = {&w.b_query, &w.b_key, &w.b_value};
    for (int i = 0; i < 3; ++i) {
      const std::int64_t n = i == 0 ? q_dim : kv_dim;
      Result<Tensor> b = r.get_vector(names[i], n, dims(n) + " (q/k/v biases: all three or none)");
      if (!b.ok()) return b.status();
      *dst[i] = std::move(b.value());
    }
  }
  if (r.has("o_proj.bias")) {
    Result<Tensor> bo = r.get_vector("o_proj.bias", c.d_out, dims(c.d_out));
    if (!bo.ok()) return bo.status();
    w.b_out = std::move(bo.value());
  }
  found.q_dim = q_dim;
  found.kv_dim = kv_dim;
  found.q_name = "q_proj.weight";
  found.kv_name = "k_proj.weight";
  return {};
}

// GPT-NeoX: the fused projection is read whole into w_query/b_query and split per head by
// split_gpt_neox once num_heads is known.
Status read_gpt_neox(LayerReader& r, LayerConfig& c, Weights& w, Found& found) {
  Result<Tensor> qkv = r.get_matrix("query_key_value.weight", -1, -1,
                                    "[3 * d, d] (per head: q, k, v blocks of head_dim rows)");
  if (!qkv.ok()) return qkv.status();
  const std::int64_t d = qkv->shape()[1];
  if (qkv->shape()[0] != 3 * d)
    return r.shape_error("query_key_value.weight", qkv->shape(), dims(3 * d, d));
  c.d_in = c.d_out = d;
  w.w_query = std::move(qkv.value());
  c.qkv_bias = r.has("query_key_value.bias");
  if (c.qkv_bias) {
    Result<Tensor> b = r.get_vector("query_key_value.bias", 3 * d, dims(3 * d));
    if (!b.ok()) return b.status();
    w.b_query = std::move(b.value());
  }
  if (Status s = read_out_proj(r, "dense.weight", "dense.bias", false, w, d); !s.ok()) return s;
  // Older Hugging Face checkpoints keep the causal mask as the buffer `bias`, as GPT-2 does.
  if (r.has("bias")) {
    Result<std::int64_t> n = check_mask(r, "bias", true);
    if (!n.ok()) return n.status();
    found.context_length = *n;
    found.context_source = "the mask buffer '" + r.full("bias") + "'";
  }
  found.q_dim = found.kv_dim = d;
  found.q_name = found.kv_name = "dense.weight";  // [d, d]: d = num_heads * head_dim
  return {};
}

// Splits GPT-NeoX's fused [3d, d] weight (and [3d] bias), laid out per head as [q_h, k_h, v_h]
// blocks of head_dim rows, into nn.Linear q, k and v of [d, d] with the heads in order.
void split_gpt_neox(const LayerConfig& c, Weights& w) {
  const std::int64_t d = c.d_in, heads = c.num_heads, hd = c.resolved_head_dim();
  const Tensor fused = std::move(w.w_query), fused_bias = std::move(w.b_query);
  Tensor* dst[] = {&w.w_query, &w.w_key, &w.w_value};
  Tensor* dst_bias[] = {&w.b_query, &w.b_key, &w.b_value};
  for (int part = 0; part < 3; ++part) {
    *dst[part] = rearranged(fused, Shape{heads * hd, d}, [&](const auto* s, auto* out) {
      for (std::int64_t h = 0; h < heads; ++h)
        std::copy_n(s + (h * 3 + part) * hd * d, hd * d, out + h * hd * d);
    });
    if (c.qkv_bias) *dst_bias[part] = Tensor(Shape{heads * hd});
    for (std::int64_t h = 0; h < heads && c.qkv_bias; ++h) {
      const std::int64_t src_row = (h * 3 + part) * hd;
      std::copy_n(fused_bias.data() + src_row, hd, dst_bias[part]->data() + h * hd);
    }
  }
}

Variant variant_of(Layout layout) {
  switch (layout) {
    case Layout::kSelfAttentionV1:
      return Variant::kSelfAttentionV1;
    case Layout::kSelfAttentionV2:
      return Variant::kSelfAttentionV2;
    case Layout::kCausalAttention:
      return Variant::kCausalAttention;
    case Layout::kMultiHeadWrapper:
      return Variant::kMultiHeadWrapper;
    default:
      return Variant::kMultiHeadAttention;
  }
}

}  // namespace

Result<Layer> load_layer(const SafetensorsFile& file, const LayerOptions& options) {
  return detail::guard(file.name(), [&]() -> Result<Layer> {
    Result<LayerLocation> loc = find_layer(file, options.layout, options.prefix);
    if (!loc.ok()) return loc.status();
    Layer layer;
    layer.location = loc.value();
    LayerReader r(file, layer.location, options.keep_16bit);
    LayerConfig& c = layer.config;
    Weights& w = layer.weights;
    Found found;
    c.variant = variant_of(layer.location.layout);
    Status s;
    switch (layer.location.layout) {
      case Layout::kSelfAttentionV1:
        s = read_v1(r, c, w);
        break;
      case Layout::kSelfAttentionV2:
      case Layout::kCausalAttention:
      case Layout::kMultiHeadAttention:
        s = read_linear_qkv(r, "", c, w);
        if (s.ok() && layer.location.layout == Layout::kMultiHeadAttention) {
          s = read_out_proj(r, "out_proj.weight", "out_proj.bias", false, w, c.d_out);
        }
        if (s.ok() && layer.location.layout != Layout::kSelfAttentionV2 && r.has("mask")) {
          Result<std::int64_t> n = check_mask(r, "mask", false);
          if (!n.ok()) return n.status();
          found.context_length = *n;
          found.context_source = "the mask buffer '" + r.full("mask") + "'";
        }
        break;
      case Layout::kMultiHeadWrapper:
        s = read_wrapper(r, c, w, found);
        break;
      case Layout::kTorchMultiheadAttention:
        s = read_torch_mha(r, c, w);
        break;
      case Layout::kGpt2:
        s = read_gpt2(r, c, w, found);
        break;
      case Layout::kHfLlama:
        s = read_hf_llama(r, c, w, found);
        break;
      case Layout::kGptNeox:
        s = read_gpt_neox(r, c, w, found);
        break;
      case Layout::kAuto:
        return r.fail(ErrorCode::kInternal, "find_layer returned layout auto");
    }
    if (!s.ok()) return s;
    if (Status rs = detail::resolve_config(r, options, found, layer); !rs.ok()) return rs;
    if (layer.location.layout == Layout::kGptNeox) {
      if (c.kv_heads() != c.num_heads) {
        return r.fail(
            ErrorCode::kInvalidArgument,
            "num_kv_heads = " + std::to_string(c.kv_heads()) + " but layout gpt-neox has " +
                "one kv head per query head (num_heads = " + std::to_string(c.num_heads) + ")");
      }
      split_gpt_neox(c, w);
    }

    // The engine's own checks (d_out divisible by num_heads, ...), with the file named.
    LayerConfig check = c;
    if (check.context_length == 0) check.context_length = 1;
    if (Status v = validate(check, w); !v.ok()) {
      return r.fail(v.code(),
                    std::string("layout ") + to_string(layer.location.layout) + ": " + v.message());
    }
    layer.tensors = std::move(r.read());
    return layer;
  });
}

}  // namespace attn::io
