// Weight validation, SelfAttention_v1 conversion and PyTorch-compatible initialisation.
#include "attn/weights.hpp"
#include "attn/chapter/random.hpp"

#include <stdexcept>
#include <string>

namespace attn {
namespace {

Status check_tensor(const char* name, const Tensor& t, Shape want) {
  if (t.shape() != want || t.numel() != want.numel()) {
    return {ErrorCode::kInvalidArgument,
            std::string("weight ") + name + " has shape " + t.shape().to_string() + " (" +
                std::to_string(t.numel()) + " values), expected " + want.to_string()};
  }
  return {};
}

Status check_absent(const char* name, const Tensor& t, const char* why) {
  if (!t.empty() || t.shape().rank() != 0) {
    return {ErrorCode::kInvalidArgument,
            std::string("weight ") + name + " " + t.shape().to_string() + " is given but " + why};
  }
  return {};
}

// Returns t [r, c] transposed, [c, r], in t's dtype (16-bit bits are moved unchanged).
Tensor transpose(const Tensor& t) {
  const std::int64_t r = t.shape()[0], c = t.shape()[1];
  Tensor out(Shape{c, r}, t.dtype());
  auto transpose_into = [&](const auto* src, auto* dst) {
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < c; ++j) dst[j * r + i] = src[i * c + j];
  };
  if (t.dtype() == DType::kF32) {
    transpose_into(t.data(), out.data());
  } else {
    transpose_into(t.bits().data(), out.bits().data());
  }
  return out;
}

// Copies `part` into rows row0.. of `whole` (a row of a rank-1 tensor is one element).
void put_rows(Tensor& whole, const Tensor& part, std::int64_t row0) {
  const std::int64_t row_width = whole.numel() / whole.shape()[0];
  std::copy(part.values().begin(), part.values().end(), whole.values().begin() + row0 * row_width);
}

}  // namespace

Result<Weights> Weights::from_input_major(const Tensor& w_query, const Tensor& w_key,
                                          const Tensor& w_value) {
  if (w_query.shape().rank() != 2 || w_query.numel() != w_query.shape().numel()) {
    return Status(ErrorCode::kInvalidArgument,
                  "W_query must be [d_in, d_out], got " + w_query.shape().to_string());
  }
  if (!(w_key.shape() == w_query.shape()) || !(w_value.shape() == w_query.shape()) ||
      w_key.numel() != w_query.numel() || w_value.numel() != w_query.numel()) {
    return Status(ErrorCode::kInvalidArgument, "W_query, W_key, W_value must have one shape; got " +
                                                   w_query.shape().to_string() + ", " +
                                                   w_key.shape().to_string() + ", " +
                                                   w_value.shape().to_string());
  }
  Weights w;
  w.w_query = transpose(w_query);
  w.w_key = transpose(w_key);
  w.w_value = transpose(w_value);
  return w;
}

Status validate(const LayerConfig& config, const Weights& w) {
  if (Status s = validate(config); !s.ok()) return s;
  const std::int64_t d_in = config.d_in, d_out = config.d_out;
  const std::int64_t q_dim = config.q_dim(), kv_dim = config.kv_dim();
  struct Named {
    const char* name;
    const Tensor& t;
    std::int64_t rows;  // q_dim for the query, kv_dim for the key and the value
  };
  const Named qkv[] = {
      {"w_query", w.w_query, q_dim}, {"w_key", w.w_key, kv_dim}, {"w_value", w.w_value, kv_dim}};
  const Named bias[] = {
      {"b_query", w.b_query, q_dim}, {"b_key", w.b_key, kv_dim}, {"b_value", w.b_value, kv_dim}};
  for (const Named& n : qkv) {
    Status s = config.has_projections()
                   ? check_tensor(n.name, n.t, Shape{n.rows, d_in})
                   : check_absent(n.name, n.t, "variant simplified has no weights");
    if (!s.ok()) return s;
  }
  for (const Tensor* b : {&w.b_query, &w.b_key, &w.b_value, &w.b_out}) {
    if (b->dtype() != DType::kF32) {
      const char* name = b == &w.b_query   ? "b_query"
                         : b == &w.b_key   ? "b_key"
                         : b == &w.b_value ? "b_value"
                                           : "b_out";
      return {ErrorCode::kInvalidArgument, std::string("weight ") + name + " is " +
                                               to_string(b->dtype()) +
                                               ": biases must be f32 (Tensor::to_f32 widens it)"};
    }
  }
  for (const Named& n : bias) {
    Status s = config.qkv_bias ? check_tensor(n.name, n.t, Shape{n.rows})
                               : check_absent(n.name, n.t, "qkv_bias is false");
    if (!s.ok()) return s;
  }
  if (config.has_out_proj()) {
    if (Status s = check_tensor("w_out", w.w_out, Shape{d_out, q_dim}); !s.ok()) return s;
    // out_proj without a bias (nn.MultiheadAttention(bias=False)) is allowed.
    if (!w.b_out.empty() || w.b_out.shape().rank() != 0) {
      if (Status s = check_tensor("b_out", w.b_out, Shape{d_out}); !s.ok()) return s;
    }
  } else {
    const char* why = "only variant mha has an output projection";
    if (Status s = check_absent("w_out", w.w_out, why); !s.ok()) return s;
    if (Status s = check_absent("b_out", w.b_out, why); !s.ok()) return s;
  }
  return {};
}

namespace {

Result<Weights> draw_weights_like_torch(const LayerConfig& config, std::uint64_t seed);

}  // namespace

Result<Weights> init_weights_like_torch(const LayerConfig& config, std::uint64_t seed) {
  if (Status s = validate(config); !s.ok()) return s;
  // validate() accepts sizes (d up to 2^20 and more) whose weights do not fit in memory:
  // the allocation failure becomes a Status, never an exception across the API.
  try {
    return draw_weights_like_torch(config, seed);
  } catch (const std::exception&) {
    const std::uint64_t floats =  // Q, K, V, out_proj
        static_cast<std::uint64_t>(config.d_in) *
            static_cast<std::uint64_t>(config.q_dim() + 2 * config.kv_dim()) +
        static_cast<std::uint64_t>(config.q_dim()) * static_cast<std::uint64_t>(config.d_out);
    return Status(ErrorCode::kResourceExhausted,
                  "init_weights_like_torch: cannot allocate the weights of d_in " +
                      std::to_string(config.d_in) + ", d_out " + std::to_string(config.d_out) +
                      " (about " + std::to_string(floats * sizeof(float)) + " bytes)");
  }
}

namespace {

Result<Weights> draw_weights_like_torch(const LayerConfig& config, std::uint64_t seed) {
  TorchGenerator gen(seed);
  const std::int64_t d_in = config.d_in, d_out = config.d_out;
  Weights w;
  // One nn.Linear(d_in, n) as its constructor draws it: weight, then bias.
  auto linear = [&](std::int64_t n, bool bias, Tensor& weight, Tensor& b) {
    weight = gen.linear_weight(d_in, n);
    if (bias) b = gen.linear_bias(d_in, n);
  };
  switch (config.variant) {
    case Variant::kSimplified:
      break;
    case Variant::kSelfAttentionV1: {
      Tensor wq = gen.rand(Shape{d_in, d_out});
      Tensor wk = gen.rand(Shape{d_in, d_out});
      Tensor wv = gen.rand(Shape{d_in, d_out});
      return Weights::from_input_major(wq, wk, wv);
    }
    case Variant::kMultiHeadWrapper: {
      const std::int64_t head_dim = config.resolved_head_dim();
      w.w_query = w.w_key = w.w_value = Tensor(Shape{d_out, d_in});
      if (config.qkv_bias) w.b_query = w.b_key = w.b_value = Tensor(Shape{d_out});
      for (std::int64_t h = 0; h < config.num_heads; ++h) {
        Tensor* ws[] = {&w.w_query, &w.w_key, &w.w_value};
        Tensor* bs[] = {&w.b_query, &w.b_key, &w.b_value};
        for (int i = 0; i < 3; ++i) {
          Tensor wt, bt;
          linear(head_dim, config.qkv_bias, wt, bt);
          put_rows(*ws[i], wt, h * head_dim);
          if (config.qkv_bias) put_rows(*bs[i], bt, h * head_dim);
        }
      }
      break;
    }
    case Variant::kSelfAttentionV2:
    case Variant::kCausalAttention:
    case Variant::kMultiHeadAttention:
      linear(config.q_dim(), config.qkv_bias, w.w_query, w.b_query);
      linear(config.kv_dim(), config.qkv_bias, w.w_key, w.b_key);
      linear(config.kv_dim(), config.qkv_bias, w.w_value, w.b_value);
      if (config.has_out_proj()) {
        w.w_out = gen.linear_weight(config.q_dim(), d_out);
        w.b_out = gen.linear_bias(config.q_dim(), d_out);
      }
      break;
  }
  return w;
}

}  // namespace

}  // namespace attn
