// `attn walkthrough`: every step of chapter 3 with the numbers the book prints, computed by
// the library: the float64 reference for the step-by-step parts, the fast engine for the
// modules (SelfAttention_v1/v2, CausalAttention, the wrapper, MultiHeadAttention).
#include "walkthrough.hpp"
#include "commands.hpp"

#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "attn/weights.hpp"

namespace attn::tools {
namespace {

using reference::Matrix;

// "Your journey starts with one step": six tokens in three dimensions.
const std::vector<float> kInputs = {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f,
                                    0.22f, 0.58f, 0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f};
constexpr std::int64_t kTokens = 6, kDim = 3;

std::string fmt(double v) {
  if (std::isinf(v)) return v < 0 ? "   -inf" : "    inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%7.4f", v);
  return buf;
}

void heading(std::ostream& out, const std::string& text) { out << "\n## " << text << "\n"; }

void print_vector(std::ostream& out, const std::string& label, const std::vector<double>& v) {
  out << label << ": [";
  for (std::size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << fmt(v[i]);
  out << "]\n";
}

void print_scalar(std::ostream& out, const std::string& label, double v) {
  out << label << ": " << fmt(v) << "\n";
}

void print_rows(std::ostream& out, const std::string& indent, const double* v, std::int64_t rows,
                std::int64_t cols) {
  for (std::int64_t i = 0; i < rows; ++i) {
    out << indent << (i == 0 ? "[[" : " [");
    for (std::int64_t j = 0; j < cols; ++j) out << (j ? ", " : "") << fmt(v[i * cols + j]);
    out << (i + 1 == rows ? "]]" : "],") << "\n";
  }
}

void print_matrix(std::ostream& out, const std::string& label, const Matrix& m) {
  out << label << " [" << m.rows << ", " << m.cols << "]:\n";
  print_rows(out, "  ", m.values.data(), m.rows, m.cols);
}

void print_tensor(std::ostream& out, const std::string& label, const Tensor& t) {
  out << label << " " << t.shape().to_string() << ":\n";
  const std::int64_t cols = t.shape()[-1], rows = t.shape()[-2];
  const std::int64_t batch = t.shape().rank() == 3 ? t.shape()[0] : 1;
  std::vector<double> v(t.values().begin(), t.values().end());
  for (std::int64_t b = 0; b < batch; ++b) {
    if (batch > 1) out << "  batch item " << b << ":\n";
    print_rows(out, "  ", v.data() + b * rows * cols, rows, cols);
  }
}

Matrix to_matrix(const Tensor& t) { return Matrix::from(t.view()); }

Tensor inputs() { return Tensor(Shape{kTokens, kDim}, kInputs); }

Tensor batch_of_two() {
  std::vector<float> v = kInputs;
  v.insert(v.end(), kInputs.begin(), kInputs.end());
  return Tensor(Shape{2, kTokens, kDim}, v);
}

// Steps that failed (each printed "error: ..."); walkthrough() then exits 1. The
// walkthrough runs once per process, from one thread.
int failed_steps = 0;

void report(std::ostream& out, const Status& s) {
  out << "error: " << s.to_string() << "\n";
  ++failed_steps;
}

// Runs the fast engine; the walkthrough's configurations are valid, so an error here is a
// failure of the library (or of the environment, e.g. ATTN_ISA naming a missing ISA).
Tensor run_engine(const LayerConfig& config, const Weights& weights, const Tensor& x,
                  std::ostream& out) {
  Result<Engine> engine = Engine::create(config, weights);
  Shape shape = x.shape();
  Tensor y(x.shape().rank() == 3 ? Shape{shape[0], shape[1], config.d_out}
                                 : Shape{shape[0], config.d_out});
  if (!engine.ok()) {
    report(out, engine.status());
    return y;
  }
  if (Status s = engine->forward(x.view(), y.view()); !s.ok()) report(out, s);
  return y;
}

Weights torch_weights(const LayerConfig& config, std::uint64_t seed, std::ostream& out) {
  Result<Weights> w = init_weights_like_torch(config, seed);
  if (!w.ok()) {
    report(out, w.status());
    return Weights{};
  }
  return std::move(w.value());
}

void section_3_3(std::ostream& out) {
  heading(out, "3.3 Simplified self-attention (no trainable weights)");
  const Matrix x = to_matrix(inputs());
  print_matrix(out, "inputs (\"Your journey starts with one step\")", x);
  const std::vector<double> scores = reference::query_scores(x, 1);
  print_vector(out, "step 1: attention scores of query x(2)", scores);
  print_scalar(out, "step 1b: dot(x(1), x(2)) as an explicit loop",
               reference::dot(x.row(0), x.row(1)));
  const std::vector<double> by_sum = reference::normalize_by_sum(scores);
  print_vector(out, "step 2a: scores / sum", by_sum);
  double sum = 0;
  for (double w : by_sum) sum += w;
  print_scalar(out, "        sum", sum);
  print_vector(out, "step 2b: naive softmax", reference::softmax_naive(scores));
  const std::vector<double> weights = reference::softmax(scores);
  print_vector(out, "step 2c: stable softmax", weights);
  print_vector(out, "step 3: context vector z(2)", reference::context_vector(weights, x));

  heading(out, "3.3.2 All tokens at once");
  const Matrix all_scores = reference::matmul_transposed(x, x);
  print_matrix(out, "attention scores = X Xᵀ", all_scores);
  const Matrix all_weights = reference::softmax_rows(all_scores);
  print_matrix(out, "attention weights = softmax(rows)", all_weights);
  std::vector<double> row_sums;
  for (std::int64_t i = 0; i < all_weights.rows; ++i) {
    double s = 0;
    for (double w : all_weights.row(i)) s += w;
    row_sums.push_back(s);
  }
  print_vector(out, "row sums", row_sums);
  print_matrix(out, "context vectors = W X (reference)", reference::matmul(all_weights, x));
  LayerConfig c = LayerConfig::chapter(Variant::kSimplified, kDim, kDim, 1, kTokens);
  print_tensor(out, "context vectors (fast engine, variant simplified)",
               run_engine(c, Weights{}, inputs(), out));
}

void section_3_4(std::ostream& out) {
  heading(out,
          "3.4 Self-attention with trainable weights (torch.manual_seed(123), d_in 3, d_out 2)");
  const Matrix x = to_matrix(inputs());
  TorchGenerator gen(123);
  const Matrix wq = to_matrix(gen.rand(Shape{3, 2}));
  const Matrix wk = to_matrix(gen.rand(Shape{3, 2}));
  const Matrix wv = to_matrix(gen.rand(Shape{3, 2}));
  print_matrix(out, "W_query = torch.rand(3, 2)", wq);
  print_matrix(out, "W_key", wk);
  print_matrix(out, "W_value", wv);
  const Matrix queries = reference::matmul(x, wq), keys = reference::matmul(x, wk),
               values = reference::matmul(x, wv);
  print_vector(out, "query_2 = x(2) W_query", {queries.row(1).begin(), queries.row(1).end()});
  print_scalar(out, "score of query 2 with key 2", reference::dot(queries.row(1), keys.row(1)));
  std::vector<double> q2_scores;
  for (std::int64_t j = 0; j < kTokens; ++j)
    q2_scores.push_back(reference::dot(queries.row(1), keys.row(j)));
  print_vector(out, "scores of query 2 with all keys", q2_scores);
  std::vector<double> scaled = q2_scores;
  for (double& s : scaled) s /= std::sqrt(2.0);
  const std::vector<double> w2 = reference::softmax(scaled);
  print_vector(out, "weights = softmax(scores / sqrt(d_k))", w2);
  print_vector(out, "context vector z(2)", reference::context_vector(w2, values));

  LayerConfig v1 = LayerConfig::chapter(Variant::kSelfAttentionV1, 3, 2, 1, kTokens);
  print_tensor(out, "SelfAttention_v1(seed 123) on all six tokens (fast engine)",
               run_engine(v1, torch_weights(v1, 123, out), inputs(), out));
  LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, kTokens);
  print_tensor(out, "SelfAttention_v2(seed 789, nn.Linear without bias) (fast engine)",
               run_engine(v2, torch_weights(v2, 789, out), inputs(), out));
}

void exercise_3_1(std::ostream& out) {
  heading(out, "Exercise 3.1: SelfAttention_v1 given SelfAttention_v2's weights (seed 123)");
  LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, kTokens);
  const Weights w2 = torch_weights(v2, 123, out);
  auto transposed = [](const Tensor& t) {
    Tensor r(Shape{t.shape()[1], t.shape()[0]});
    for (std::int64_t i = 0; i < t.shape()[0]; ++i)
      for (std::int64_t j = 0; j < t.shape()[1]; ++j)
        r.data()[j * t.shape()[0] + i] = t.data()[i * t.shape()[1] + j];
    return r;
  };
  Result<Weights> w1 = Weights::from_input_major(transposed(w2.w_query), transposed(w2.w_key),
                                                 transposed(w2.w_value));
  LayerConfig v1 = LayerConfig::chapter(Variant::kSelfAttentionV1, 3, 2, 1, kTokens);
  print_tensor(out, "SelfAttention_v2 (seed 123)", run_engine(v2, w2, inputs(), out));
  if (!w1.ok()) report(out, w1.status());
  print_tensor(out, "SelfAttention_v1 with W = v2's weights transposed",
               run_engine(v1, w1.ok() ? w1.value() : Weights{}, inputs(), out));
}

void section_3_5(std::ostream& out) {
  heading(out, "3.5 Causal attention (SelfAttention_v2's weights, seed 789)");
  LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, kTokens);
  const Weights w = torch_weights(v2, 789, out);
  const Matrix x = to_matrix(inputs());
  const Matrix q = reference::linear(x, to_matrix(w.w_query)),
               k = reference::linear(x, to_matrix(w.w_key));
  const Matrix scores = reference::matmul_transposed(q, k);
  const Matrix weights = reference::softmax_rows(reference::scale(scores, 1.0 / std::sqrt(2.0)));
  print_matrix(out, "attention weights before masking", weights);
  Matrix masked_simple =
      weights;  // the chapter's weights * torch.tril(ones): zeros above the diagonal
  for (std::int64_t i = 0; i < masked_simple.rows; ++i)
    for (std::int64_t j = i + 1; j < masked_simple.cols; ++j) masked_simple(i, j) = 0.0;
  print_matrix(
      out,
      "way 1: weights times the lower-triangular mask (masked_simple, rows not yet summing to 1)",
      masked_simple);
  print_matrix(out, "way 1: zero above the diagonal, renormalise rows",
               reference::mask_after_softmax(weights));
  const Matrix masked = reference::mask_before_softmax(scores);
  print_matrix(out, "way 2: scores with -inf above the diagonal", masked);
  const Matrix causal = reference::softmax_rows(reference::scale(masked, 1.0 / std::sqrt(2.0)));
  print_matrix(out, "way 2: softmax(masked scores / sqrt(d_k)) (same as way 1)", causal);

  TorchGenerator gen(123);
  print_matrix(out, "Dropout(0.5) on a 6x6 matrix of ones (seed 123)",
               reference::dropout(Matrix(6, 6, std::vector<double>(36, 1.0)), 0.5, gen));
  TorchGenerator gen2(123);
  print_matrix(out, "Dropout(0.5) on the causal weights (seed 123)",
               reference::dropout(causal, 0.5, gen2));

  LayerConfig ca = LayerConfig::chapter(Variant::kCausalAttention, 3, 2, 1, kTokens);
  print_tensor(
      out, "CausalAttention(d_in 3, d_out 2, context_length 6, dropout 0, seed 123) on the batch",
      run_engine(ca, torch_weights(ca, 123, out), batch_of_two(), out));
  Tensor seven(Shape{7, 3});
  Result<Engine> e = Engine::create(ca, torch_weights(ca, 123, out));
  Tensor y(Shape{7, 2});
  if (!e.ok()) {
    report(out, e.status());
    return;
  }
  out << "7 tokens with context_length 6: " << e->forward(seven.view(), y.view()).to_string()
      << "\n";
}

void section_3_6(std::ostream& out) {
  heading(out, "3.6 Multi-head attention (seed 123)");
  LayerConfig wrapper = LayerConfig::chapter(Variant::kMultiHeadWrapper, 3, 4, 2, kTokens);
  print_tensor(out, "MultiHeadAttentionWrapper(2 heads of d_out 2), outputs concatenated",
               run_engine(wrapper, torch_weights(wrapper, 123, out), batch_of_two(), out));
  LayerConfig mha = LayerConfig::chapter(Variant::kMultiHeadAttention, 3, 2, 2, kTokens);
  print_tensor(out, "MultiHeadAttention(d_out 2, 2 heads: head_dim 1, out_proj)",
               run_engine(mha, torch_weights(mha, 123, out), batch_of_two(), out));

  const std::vector<double> a = {0.2745, 0.6584, 0.2775, 0.8573, 0.8993, 0.0390, 0.9268, 0.7388,
                                 0.7179, 0.7058, 0.9156, 0.4340, 0.0772, 0.3565, 0.1479, 0.5331,
                                 0.4066, 0.2318, 0.4545, 0.9737, 0.4606, 0.5159, 0.4220, 0.5786};
  for (int h = 0; h < 2; ++h) {
    const Matrix head(3, 4, std::vector<double>(a.begin() + h * 12, a.begin() + (h + 1) * 12));
    print_matrix(out, "a aᵀ for head " + std::to_string(h) + " of a [1, 2, 3, 4]",
                 reference::matmul_transposed(head, head));
  }
}

void exercise_3_2(std::ostream& out) {
  heading(out, "Exercise 3.2: the wrapper with d_out 1 per head (seed 123)");
  LayerConfig wrapper = LayerConfig::chapter(Variant::kMultiHeadWrapper, 3, 2, 2, kTokens);
  print_tensor(out, "MultiHeadAttentionWrapper(2 heads of d_out 1)",
               run_engine(wrapper, torch_weights(wrapper, 123, out), batch_of_two(), out));
}

void exercise_3_3(std::ostream& out) {
  heading(out, "Exercise 3.3: GPT-2 small's attention (d 768, 12 heads, context 1024)");
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, 768, 768, 12, 1024);
  const Weights w = torch_weights(c, 123, out);
  const std::int64_t params =
      w.w_query.numel() + w.w_key.numel() + w.w_value.numel() + w.w_out.numel() + w.b_out.numel();
  out << "parameters (qkv_bias=False, as in the chapter): " << params << "\n";
  out << "head_dim: " << c.resolved_head_dim() << "\n";
  Result<Engine> e = Engine::create(c, w);
  if (!e.ok()) {
    report(out, e.status());
    return;
  }
  out << "packed weights: " << e->weight_bytes() << " bytes; kernels: " << e->isa()
      << "; threads: " << e->threads() << "\n";
}

}  // namespace

int walkthrough(std::ostream& out, const std::string& section) {
  const std::vector<std::pair<std::string, std::function<void(std::ostream&)>>> sections = {
      {"3.3", section_3_3}, {"3.4", section_3_4},    {"ex3.1", exercise_3_1}, {"3.5", section_3_5},
      {"3.6", section_3_6}, {"ex3.2", exercise_3_2}, {"ex3.3", exercise_3_3}};
  bool found = false;
  failed_steps = 0;
  for (const auto& [name, print] : sections) {
    if (section.empty() || section == name) {
      print(out);
      found = true;
    }
  }
  if (!found) {
    std::string names;
    for (const auto& s : sections) names += " " + s.first;
    std::fprintf(stderr, "attn walkthrough: unknown section '%s' (sections:%s)\n", section.c_str(),
                 names.c_str());
    return 2;
  }
  if (failed_steps > 0) {
    std::fprintf(stderr, "attn walkthrough: %d step(s) failed (see 'error:' above)\n",
                 failed_steps);
    return 1;
  }
  return 0;
}

Command add_walkthrough(CLI::App& app) {
  auto section = std::make_shared<std::string>();
  CLI::App* sub =
      app.add_subcommand("walkthrough", "Print chapter 3's steps and numbers, section by section");
  sub->add_option("--section", *section,
                  "Print one section: 3.3, 3.4, ex3.1, 3.5, 3.6, ex3.2, ex3.3");
  return {sub, [section] { return walkthrough(std::cout, *section); }};
}

}  // namespace attn::tools
