// The float64 reference: chapter 3 written plainly (see attn/chapter/reference.hpp).
#include "attn/chapter/reference.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "kernels/visibility.hpp"
#include "shapes.hpp"

namespace attn::reference {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

Matrix from_floats(const float* data, std::int64_t rows, std::int64_t cols) {
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.values[i] = data[i];
  return m;
}

// Rows r0 .. r0 + n - 1 of a [rows, cols] tensor (a head's slice of a projection); 16-bit
// weights are widened (exactly), so the oracle computes with the values the engine packs.
Matrix rows_of(const Tensor& t, std::int64_t r0, std::int64_t n) {
  const std::int64_t cols = t.shape().rank() == 2 ? t.shape()[1] : 1;
  if (t.dtype() != DType::kF32) return from_floats(t.to_f32().data() + r0 * cols, n, cols);
  return from_floats(t.data() + r0 * cols, n, cols);
}

std::vector<double> bias_of(const Tensor& t, std::int64_t r0, std::int64_t n) {
  if (t.empty()) return {};
  return {t.data() + r0, t.data() + r0 + n};
}

// Columns c0 .. c0 + n - 1 of m.
Matrix columns(const Matrix& m, std::int64_t c0, std::int64_t n) {
  Matrix out(m.rows, n);
  for (std::int64_t i = 0; i < m.rows; ++i)
    for (std::int64_t j = 0; j < n; ++j) out(i, j) = m(i, c0 + j);
  return out;
}

}  // namespace

Matrix Matrix::from(ConstTensorView view) {
  const std::int64_t cols = view.shape.rank() >= 1 ? view.shape[-1] : 1;
  const std::int64_t n = view.shape.numel();
  return from_floats(view.data, cols > 0 ? n / cols : 0, cols);
}

double dot(std::span<const double> a, std::span<const double> b) {
  double acc = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) acc += a[i] * b[i];
  return acc;
}

std::vector<double> query_scores(const Matrix& x, std::int64_t query) {
  std::vector<double> s(x.rows);
  for (std::int64_t j = 0; j < x.rows; ++j) s[j] = dot(x.row(j), x.row(query));
  return s;
}

std::vector<double> normalize_by_sum(std::span<const double> s) {
  double sum = 0.0;
  for (double x : s) sum += x;
  std::vector<double> out(s.begin(), s.end());
  for (double& x : out) x /= sum;
  return out;
}

std::vector<double> softmax_naive(std::span<const double> s) {
  std::vector<double> out(s.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < s.size(); ++i) sum += out[i] = std::exp(s[i]);
  for (double& x : out) x /= sum;
  return out;
}

std::vector<double> softmax(std::span<const double> s) {
  double mx = kNegInf;
  for (double x : s) mx = std::max(mx, x);
  std::vector<double> out(s.size(), 0.0);
  if (mx == kNegInf) return out;  // nothing visible
  double sum = 0.0;
  for (std::size_t i = 0; i < s.size(); ++i) sum += out[i] = std::exp(s[i] - mx);
  for (double& x : out) x /= sum;
  return out;
}

std::vector<double> context_vector(std::span<const double> weights, const Matrix& values) {
  std::vector<double> z(values.cols, 0.0);
  for (std::int64_t j = 0; j < values.rows; ++j)
    for (std::int64_t d = 0; d < values.cols; ++d) z[d] += weights[j] * values(j, d);
  return z;
}

Matrix matmul(const Matrix& a, const Matrix& b) {
  Matrix c(a.rows, b.cols);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t p = 0; p < a.cols; ++p)
      for (std::int64_t j = 0; j < b.cols; ++j) c(i, j) += a(i, p) * b(p, j);
  return c;
}

Matrix matmul_transposed(const Matrix& a, const Matrix& b) {
  Matrix c(a.rows, b.rows);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < b.rows; ++j) c(i, j) = dot(a.row(i), b.row(j));
  return c;
}

Matrix transpose(const Matrix& a) {
  Matrix t(a.cols, a.rows);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  return t;
}

Matrix scale(const Matrix& a, double factor) {
  Matrix out = a;
  for (double& x : out.values) x *= factor;
  return out;
}

Matrix linear(const Matrix& x, const Matrix& w, std::span<const double> b) {
  Matrix y = matmul_transposed(x, w);
  if (!b.empty()) {
    for (std::int64_t i = 0; i < y.rows; ++i)
      for (std::int64_t j = 0; j < y.cols; ++j) y(i, j) += b[j];
  }
  return y;
}

Matrix softmax_rows(const Matrix& scores) {
  Matrix out(scores.rows, scores.cols);
  for (std::int64_t i = 0; i < scores.rows; ++i) {
    const std::vector<double> r = softmax(scores.row(i));
    std::copy(r.begin(), r.end(), out.values.begin() + i * out.cols);
  }
  return out;
}

Matrix mask_after_softmax(const Matrix& weights) {
  Matrix out = weights;
  for (std::int64_t i = 0; i < out.rows; ++i) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < out.cols; ++j) {
      if (j > i + out.cols - out.rows) out(i, j) = 0.0;
      sum += out(i, j);
    }
    for (std::int64_t j = 0; j < out.cols; ++j) out(i, j) = sum > 0.0 ? out(i, j) / sum : 0.0;
  }
  return out;
}

Matrix mask_before_softmax(const Matrix& scores) {
  Matrix out = scores;
  for (std::int64_t i = 0; i < out.rows; ++i)
    for (std::int64_t j = i + out.cols - out.rows + 1; j < out.cols; ++j)
      if (j >= 0) out(i, j) = kNegInf;
  return out;
}

Matrix dropout(const Matrix& x, double p, TorchGenerator& gen) {
  if (p == 0.0) return x;
  Matrix out = x;
  const double keep_scale = 1.0 / (1.0 - p);
  for (double& v : out.values) v = gen.dropout_keep(p) ? v * keep_scale : 0.0;
  return out;
}

Matrix attention_weights(const Matrix& q, const Matrix& k, const AttentionOptions& o) {
  Matrix s = scale(matmul_transposed(q, k), o.scale);
  for (std::int64_t i = 0; i < s.rows; ++i) {
    // Soft-capping, then ALiBi (query row i sits at position i + k.rows - q.rows), then the mask.
    const std::int64_t position = i + k.rows - q.rows;
    for (std::int64_t j = 0; j < s.cols; ++j) {
      if (o.softcap > 0) s(i, j) = o.softcap * std::tanh(s(i, j) / o.softcap);
      if (o.alibi_slope != 0) s(i, j) += o.alibi_slope * static_cast<double>(j - position);
    }
    const kernels::KeyRange keys = kernels::visible_keys(
        static_cast<std::size_t>(i), static_cast<std::size_t>(q.rows),
        static_cast<std::size_t>(k.rows), o.causal, static_cast<std::size_t>(o.window));
    for (std::int64_t j = 0; j < s.cols; ++j) {
      if (!keys.contains(static_cast<std::size_t>(j))) s(i, j) = kNegInf;
    }
  }
  return softmax_rows(s);
}

Matrix attention(const Matrix& q, const Matrix& k, const Matrix& v, const AttentionOptions& o) {
  const Matrix w = attention_weights(q, k, o);
  Matrix out(q.rows, v.cols);
  for (std::int64_t i = 0; i < q.rows; ++i) {
    const std::vector<double> z = context_vector(w.row(i), v);
    std::copy(z.begin(), z.end(), out.values.begin() + i * out.cols);
  }
  return out;
}

namespace {

// Rotary position embedding of every head of m [seq_len, heads * head_dim] at positions
// 0..seq_len-1: angles in float32 as the Hugging Face code computes them, the rotation in
// float64.
void rotate(const LayerConfig& config, Matrix& m) {
  const std::int64_t rope_dim = config.resolved_rope_dim();
  if (rope_dim == 0) return;
  const std::int64_t head_dim = config.resolved_head_dim(), half = rope_dim / 2;
  const auto theta = static_cast<float>(config.rope_theta);
  for (std::int64_t p = 0; p < m.rows; ++p) {
    for (std::int64_t i = 0; i < half; ++i) {
      const float inv_freq =
          1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
      const double angle = static_cast<double>(static_cast<float>(p) * inv_freq);
      const double c = std::cos(angle), s = std::sin(angle);
      for (std::int64_t h0 = 0; h0 < m.cols; h0 += head_dim) {
        const std::int64_t a = h0 + (config.rope == Rope::kNeox ? i : 2 * i);
        const std::int64_t b = h0 + (config.rope == Rope::kNeox ? i + half : 2 * i + 1);
        const double x0 = m(p, a), x1 = m(p, b);
        m(p, a) = x0 * c - x1 * s;
        m(p, b) = x1 * c + x0 * s;
      }
    }
  }
}

}  // namespace

Result<Output> forward(const LayerConfig& config, const Weights& weights, ConstTensorView x) {
  if (Status s = validate(config, weights); !s.ok()) return s;
  Result<detail::BatchShape> shape = detail::check_input(config, x);
  if (!shape.ok()) return shape.status();
  const std::int64_t batch = shape->batch, seq_len = shape->seq_len;
  const std::int64_t d_in = config.d_in, d_out = config.d_out,
                     head_dim = config.resolved_head_dim();

  AttentionOptions opt;
  opt.causal = config.causal();
  opt.window = config.window;
  opt.scale = config.resolved_scale();
  opt.softcap = config.softcap;
  const std::vector<double> slopes =
      config.alibi ? alibi_slopes(config.num_heads) : std::vector<double>{};
  // Head h's options (its ALiBi slope).
  auto head_opt = [&](std::int64_t h) {
    AttentionOptions o = opt;
    if (!slopes.empty()) o.alibi_slope = slopes[static_cast<std::size_t>(h)];
    return o;
  };

  Output result;
  result.shape = shape->output_shape(d_out);
  result.values.reserve(batch * seq_len * d_out);
  for (std::int64_t b = 0; b < batch; ++b) {
    const Matrix xb = from_floats(x.data + b * seq_len * d_in, seq_len, d_in);
    Matrix context(seq_len, d_out);
    if (config.variant == Variant::kSimplified) {
      context = attention(xb, xb, xb, head_opt(0));
    } else if (config.variant == Variant::kMultiHeadAttention) {
      // One projection each, split into heads by columns (query head h reads kv head
      // h / group), rotated when the layer has rotary embeddings, then out_proj.
      const std::int64_t q_dim = config.q_dim(), kv_dim = config.kv_dim();
      const std::int64_t group = config.num_heads / config.kv_heads();
      Matrix q = linear(xb, rows_of(weights.w_query, 0, q_dim), bias_of(weights.b_query, 0, q_dim));
      Matrix k = linear(xb, rows_of(weights.w_key, 0, kv_dim), bias_of(weights.b_key, 0, kv_dim));
      const Matrix v =
          linear(xb, rows_of(weights.w_value, 0, kv_dim), bias_of(weights.b_value, 0, kv_dim));
      rotate(config, q);
      rotate(config, k);
      Matrix heads(seq_len, q_dim);
      for (std::int64_t h = 0; h < config.num_heads; ++h) {
        const std::int64_t kv = (h / group) * head_dim;
        const Matrix o = attention(columns(q, h * head_dim, head_dim), columns(k, kv, head_dim),
                                   columns(v, kv, head_dim), head_opt(h));
        for (std::int64_t i = 0; i < seq_len; ++i)
          for (std::int64_t d = 0; d < head_dim; ++d) heads(i, h * head_dim + d) = o(i, d);
      }
      context = linear(heads, rows_of(weights.w_out, 0, d_out), bias_of(weights.b_out, 0, d_out));
    } else {
      // Single-head variants and the wrapper: each head is its own small module.
      for (std::int64_t h = 0; h < config.num_heads; ++h) {
        const Matrix q = linear(xb, rows_of(weights.w_query, h * head_dim, head_dim),
                                bias_of(weights.b_query, h * head_dim, head_dim));
        const Matrix k = linear(xb, rows_of(weights.w_key, h * head_dim, head_dim),
                                bias_of(weights.b_key, h * head_dim, head_dim));
        const Matrix v = linear(xb, rows_of(weights.w_value, h * head_dim, head_dim),
                                bias_of(weights.b_value, h * head_dim, head_dim));
        Matrix qr = q, kr = k;
        rotate(config, qr);
        rotate(config, kr);
        const Matrix o = attention(qr, kr, v, head_opt(h));
        for (std::int64_t i = 0; i < seq_len; ++i)
          for (std::int64_t d = 0; d < head_dim; ++d) context(i, h * head_dim + d) = o(i, d);
      }
    }
    result.values.insert(result.values.end(), context.values.begin(), context.values.end());
  }
  return result;
}

}  // namespace attn::reference
