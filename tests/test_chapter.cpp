// Chapter 3's printed numbers (../shared/book/ch03-reference.md), computed by the library:
// the float64 reference for the steps, the fast engine for the modules. Tolerance 5e-5.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "helpers.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;
using attn::Weights;
using attn::reference::Matrix;

namespace {

constexpr double kTol = 5e-5;

const std::vector<float> kInputs = {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f,
                                    0.22f, 0.58f, 0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f};

Tensor inputs() { return Tensor(Shape{6, 3}, kInputs); }
Tensor batch() {
  std::vector<float> v = kInputs;
  v.insert(v.end(), kInputs.begin(), kInputs.end());
  return Tensor(Shape{2, 6, 3}, v);
}
Matrix x_matrix() { return Matrix::from(inputs().view()); }

Weights torch_weights(const LayerConfig& c, std::uint64_t seed) {
  auto w = attn::init_weights_like_torch(c, seed);
  REQUIRE(w.ok());
  return std::move(w.value());
}

// Runs the fast engine on x and returns the output.
std::vector<float> run(const LayerConfig& c, const Weights& w, const Tensor& x) {
  auto engine = attn::Engine::create(c, w);
  INFO(engine.status().to_string());
  REQUIRE(engine.ok());
  Tensor y(x.shape().rank() == 3 ? Shape{x.shape()[0], x.shape()[1], c.d_out}
                                 : Shape{x.shape()[0], c.d_out});
  attn::Status s = engine->forward(x.view(), y.view());
  INFO(s.to_string());
  REQUIRE(s.ok());
  return y.values();
}

// Checks every batch item of `got` against the same `want` rows.
void check_rows(const std::vector<float>& got, std::initializer_list<double> want) {
  const std::size_t n = want.size();
  REQUIRE(got.size() % n == 0);
  for (std::size_t b = 0; b < got.size() / n; ++b) {
    CAPTURE(b);
    CHECK(test::max_abs_diff(std::span<const float>(got.data() + b * n, n), want) < kTol);
  }
}

template <class V>
void check(const V& got, std::initializer_list<double> want) {
  CHECK(test::max_abs_diff(std::span<const double>(got.data(), got.size()), want) < kTol);
}

}  // namespace

TEST_CASE("3.3 simplified self-attention, step by step", "[book]") {
  const Matrix x = x_matrix();
  const auto scores = attn::reference::query_scores(x, 1);
  check(scores, {0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865});
  CHECK(std::abs(attn::reference::dot(x.row(0), x.row(1)) - 0.9544) < kTol);
  const auto by_sum = attn::reference::normalize_by_sum(scores);
  check(by_sum, {0.1455, 0.2278, 0.2249, 0.1285, 0.1077, 0.1656});
  double sum = 0;
  for (double w : by_sum) sum += w;
  CHECK(std::abs(sum - 1.0) < kTol);
  check(attn::reference::softmax_naive(scores), {0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581});
  const auto weights = attn::reference::softmax(scores);
  check(weights, {0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581});
  check(attn::reference::context_vector(weights, x), {0.4419, 0.6515, 0.5683});
}

TEST_CASE("3.3 simplified self-attention, all tokens", "[book]") {
  const Matrix x = x_matrix();
  const Matrix scores = attn::reference::matmul_transposed(x, x);
  check(scores.values, {0.9995, 0.9544, 0.9422, 0.4753, 0.4576, 0.6310, 0.9544, 1.4950, 1.4754,
                        0.8434, 0.7070, 1.0865, 0.9422, 1.4754, 1.4570, 0.8296, 0.7154, 1.0605,
                        0.4753, 0.8434, 0.8296, 0.4937, 0.3474, 0.6565, 0.4576, 0.7070, 0.7154,
                        0.3474, 0.6654, 0.2935, 0.6310, 1.0865, 1.0605, 0.6565, 0.2935, 0.9450});
  const Matrix weights = attn::reference::softmax_rows(scores);
  check(weights.values, {0.2098, 0.2006, 0.1981, 0.1242, 0.1220, 0.1452, 0.1385, 0.2379, 0.2333,
                         0.1240, 0.1082, 0.1581, 0.1390, 0.2369, 0.2326, 0.1242, 0.1108, 0.1565,
                         0.1435, 0.2074, 0.2046, 0.1462, 0.1263, 0.1720, 0.1526, 0.1958, 0.1975,
                         0.1367, 0.1879, 0.1295, 0.1385, 0.2184, 0.2128, 0.1420, 0.0988, 0.1896});
  for (std::int64_t i = 0; i < 6; ++i) {
    double s = 0;
    for (double w : weights.row(i)) s += w;
    CHECK(std::abs(s - 1.0) < 1e-12);
  }
  const std::initializer_list<double> context = {0.4421, 0.5931, 0.5790, 0.4419, 0.6515, 0.5683,
                                                 0.4431, 0.6496, 0.5671, 0.4304, 0.6298, 0.5510,
                                                 0.4671, 0.5910, 0.5266, 0.4177, 0.6503, 0.5645};
  check(attn::reference::matmul(weights, x).values, context);
  // The same through the fast engine (variant simplified: no weights, no scaling).
  check_rows(run(LayerConfig::chapter(Variant::kSimplified, 3, 3, 1, 6), Weights{}, inputs()),
             context);
}

TEST_CASE("3.4 self-attention with trainable weights, step by step (seed 123)", "[book]") {
  const Matrix x = x_matrix();
  attn::TorchGenerator gen(123);
  const Matrix wq = Matrix::from(gen.rand(Shape{3, 2}).view());
  const Matrix wk = Matrix::from(gen.rand(Shape{3, 2}).view());
  const Matrix wv = Matrix::from(gen.rand(Shape{3, 2}).view());
  const Matrix q = attn::reference::matmul(x, wq), k = attn::reference::matmul(x, wk),
               v = attn::reference::matmul(x, wv);
  check(std::vector<double>(q.row(1).begin(), q.row(1).end()), {0.4306, 1.4551});
  CHECK(std::abs(attn::reference::dot(q.row(1), k.row(1)) - 1.8524) < kTol);
  std::vector<double> scores;
  for (std::int64_t j = 0; j < 6; ++j) scores.push_back(attn::reference::dot(q.row(1), k.row(j)));
  check(scores, {1.2705, 1.8524, 1.8111, 1.0795, 0.5577, 1.5440});
  for (double& s : scores) s /= std::sqrt(2.0);
  const auto w = attn::reference::softmax(scores);
  check(w, {0.1500, 0.2264, 0.2199, 0.1311, 0.0906, 0.1820});
  check(attn::reference::context_vector(w, v), {0.3061, 0.8210});
}

TEST_CASE("3.4 SelfAttention_v1 and v2 modules", "[book]") {
  const LayerConfig v1 = LayerConfig::chapter(Variant::kSelfAttentionV1, 3, 2, 1, 6);
  check_rows(run(v1, torch_weights(v1, 123), inputs()),
             {0.2996, 0.8053, 0.3061, 0.8210, 0.3058, 0.8203, 0.2948, 0.7939, 0.2927, 0.7891,
              0.2990, 0.8040});
  const LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, 6);
  check_rows(run(v2, torch_weights(v2, 789), inputs()),
             {-0.0739, 0.0713, -0.0748, 0.0703, -0.0749, 0.0702, -0.0760, 0.0685, -0.0763, 0.0679,
              -0.0754, 0.0693});
}

TEST_CASE("exercise 3.1: v1 with v2's weights transposed equals v2", "[book]") {
  const LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, 6);
  const Weights w2 = torch_weights(v2, 123);
  auto t = [](const Tensor& m) {
    Tensor r(Shape{m.shape()[1], m.shape()[0]});
    for (std::int64_t i = 0; i < m.shape()[0]; ++i)
      for (std::int64_t j = 0; j < m.shape()[1]; ++j)
        r.data()[j * m.shape()[0] + i] = m.data()[i * m.shape()[1] + j];
    return r;
  };
  auto w1 = Weights::from_input_major(t(w2.w_query), t(w2.w_key), t(w2.w_value));
  REQUIRE(w1.ok());
  const std::initializer_list<double> want = {-0.5337, -0.1051, -0.5323, -0.1080, -0.5323, -0.1079,
                                              -0.5297, -0.1076, -0.5311, -0.1066, -0.5299, -0.1081};
  const auto out2 = run(v2, w2, inputs());
  const auto out1 =
      run(LayerConfig::chapter(Variant::kSelfAttentionV1, 3, 2, 1, 6), w1.value(), inputs());
  check_rows(out2, want);
  check_rows(out1, want);
  CHECK(out1 == out2);  // the same arithmetic, so the same bits
}

TEST_CASE("3.5 causal masking, both ways", "[book]") {
  const LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, 6);
  const Weights w = torch_weights(v2, 789);
  const Matrix x = x_matrix();
  const Matrix q = attn::reference::linear(x, Matrix::from(w.w_query.view()));
  const Matrix k = attn::reference::linear(x, Matrix::from(w.w_key.view()));
  const Matrix scores = attn::reference::matmul_transposed(q, k);
  const Matrix weights =
      attn::reference::softmax_rows(attn::reference::scale(scores, 1 / std::sqrt(2.0)));
  check(weights.values, {0.1921, 0.1646, 0.1652, 0.1550, 0.1721, 0.1510, 0.2041, 0.1659, 0.1662,
                         0.1496, 0.1665, 0.1477, 0.2036, 0.1659, 0.1662, 0.1498, 0.1664, 0.1480,
                         0.1869, 0.1667, 0.1668, 0.1571, 0.1661, 0.1564, 0.1830, 0.1669, 0.1670,
                         0.1588, 0.1658, 0.1585, 0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529});
  const std::initializer_list<double> causal = {
      1.0000, 0,      0,      0,      0,      0, 0.5517, 0.4483, 0,      0,      0,      0,
      0.3800, 0.3097, 0.3103, 0,      0,      0, 0.2758, 0.2460, 0.2462, 0.2319, 0,      0,
      0.2175, 0.1983, 0.1984, 0.1888, 0.1971, 0, 0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529};
  const Matrix way1 = attn::reference::mask_after_softmax(weights);
  check(way1.values, causal);
  const Matrix masked = attn::reference::mask_before_softmax(scores);
  const double inf = INFINITY;
  const std::vector<double> want_masked = {
      0.2899, -inf,   -inf,   -inf,   -inf,   -inf, 0.4656, 0.1723, -inf,   -inf,   -inf,   -inf,
      0.4594, 0.1703, 0.1731, -inf,   -inf,   -inf, 0.2642, 0.1024, 0.1036, 0.0186, -inf,   -inf,
      0.2183, 0.0874, 0.0882, 0.0177, 0.0786, -inf, 0.3408, 0.1270, 0.1290, 0.0198, 0.1290, 0.0078};
  for (std::size_t i = 0; i < want_masked.size(); ++i) {
    CAPTURE(i);
    if (std::isinf(want_masked[i])) {
      CHECK(masked.values[i] == -inf);
    } else {
      CHECK(std::abs(masked.values[i] - want_masked[i]) < kTol);
    }
  }
  const Matrix way2 =
      attn::reference::softmax_rows(attn::reference::scale(masked, 1 / std::sqrt(2.0)));
  check(way2.values, causal);
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = i + 1; j < 6; ++j) CHECK(way2(i, j) == 0.0);  // exactly zero
}

TEST_CASE("3.5 dropout in training mode (seed 123)", "[book]") {
  attn::TorchGenerator gen(123);
  const Matrix ones(6, 6, std::vector<double>(36, 1.0));
  check(attn::reference::dropout(ones, 0.5, gen).values,
        {2, 2, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 2, 2, 2, 2, 0, 2,
         0, 2, 2, 0, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 2, 2, 2, 0});
  const LayerConfig v2 = LayerConfig::chapter(Variant::kSelfAttentionV2, 3, 2, 1, 6);
  const Weights w = torch_weights(v2, 789);
  const Matrix x = x_matrix();
  const Matrix q = attn::reference::linear(x, Matrix::from(w.w_query.view()));
  const Matrix k = attn::reference::linear(x, Matrix::from(w.w_key.view()));
  const Matrix causal = attn::reference::softmax_rows(attn::reference::scale(
      attn::reference::mask_before_softmax(attn::reference::matmul_transposed(q, k)),
      1 / std::sqrt(2.0)));
  attn::TorchGenerator gen2(123);
  check(attn::reference::dropout(causal, 0.5, gen2).values,
        {2.0000, 0,      0,      0,      0, 0, 0, 0,      0,      0,      0,      0,
         0.7599, 0.6194, 0.6206, 0,      0, 0, 0, 0.4921, 0.4925, 0,      0,      0,
         0,      0.3966, 0,      0.3775, 0, 0, 0, 0.3327, 0.3331, 0.3084, 0.3331, 0});
}

TEST_CASE("3.5 CausalAttention on the batch, and its context_length error", "[book]") {
  const LayerConfig c = LayerConfig::chapter(Variant::kCausalAttention, 3, 2, 1, 6);
  const Weights w = torch_weights(c, 123);
  check_rows(run(c, w, batch()), {-0.4519, 0.2216, -0.5874, 0.0058, -0.6300, -0.0632, -0.5675,
                                  -0.0843, -0.5526, -0.0981, -0.5299, -0.1081});
  auto engine = attn::Engine::create(c, w);
  REQUIRE(engine.ok());
  Tensor seven(Shape{1, 7, 3}), y(Shape{1, 7, 2});
  const attn::Status s = engine->forward(seven.view(), y.view());
  CHECK(s.code() == attn::ErrorCode::kOutOfRange);
  CHECK_THAT(s.message(), Catch::Contains("seq_len = 7") && Catch::Contains("context_length = 6"));
}

TEST_CASE("3.6 the wrapper, MultiHeadAttention and per-head products (seed 123)", "[book]") {
  const LayerConfig wrapper = LayerConfig::chapter(Variant::kMultiHeadWrapper, 3, 4, 2, 6);
  check_rows(run(wrapper, torch_weights(wrapper, 123), batch()),
             {-0.4519, 0.2216,  0.4772, 0.1063, -0.5874, 0.0058,  0.5891, 0.3257,
              -0.6300, -0.0632, 0.6202, 0.3860, -0.5675, -0.0843, 0.5478, 0.3589,
              -0.5526, -0.0981, 0.5321, 0.3428, -0.5299, -0.1081, 0.5077, 0.3493});
  const LayerConfig mha = LayerConfig::chapter(Variant::kMultiHeadAttention, 3, 2, 2, 6);
  check_rows(run(mha, torch_weights(mha, 123), batch()),
             {0.3190, 0.4858, 0.2943, 0.3897, 0.2856, 0.3593, 0.2693, 0.3873, 0.2639, 0.3928,
              0.2575, 0.4028});
  const std::vector<double> a = {0.2745, 0.6584, 0.2775, 0.8573, 0.8993, 0.0390, 0.9268, 0.7388,
                                 0.7179, 0.7058, 0.9156, 0.4340, 0.0772, 0.3565, 0.1479, 0.5331,
                                 0.4066, 0.2318, 0.4545, 0.9737, 0.4606, 0.5159, 0.4220, 0.5786};
  const Matrix h0(3, 4, std::vector<double>(a.begin(), a.begin() + 12));
  const Matrix h1(3, 4, std::vector<double>(a.begin() + 12, a.end()));
  check(attn::reference::matmul_transposed(h0, h0).values,
        {1.3208, 1.1631, 1.2879, 1.1631, 2.2150, 1.8424, 1.2879, 1.8424, 2.0402});
  check(attn::reference::matmul_transposed(h1, h1).values,
        {0.4391, 0.7003, 0.5903, 0.7003, 1.3737, 1.0620, 0.5903, 1.0620, 0.9912});
}

TEST_CASE("exercise 3.2: the wrapper with d_out 1 per head", "[book]") {
  const LayerConfig wrapper = LayerConfig::chapter(Variant::kMultiHeadWrapper, 3, 2, 2, 6);
  check_rows(run(wrapper, torch_weights(wrapper, 123), batch()),
             {-0.5740, 0.2216, -0.7320, 0.0155, -0.7774, -0.0546, -0.6979, -0.0817, -0.6538,
              -0.0957, -0.6424, -0.1065});
}

TEST_CASE("exercise 3.3: GPT-2 small's attention has 2,360,064 parameters", "[book]") {
  const LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, 768, 768, 12, 1024);
  const Weights w = torch_weights(c, 123);
  CHECK(w.w_query.numel() + w.w_key.numel() + w.w_value.numel() + w.w_out.numel() +
            w.b_out.numel() ==
        2360064);
  CHECK(c.resolved_head_dim() == 64);
}
