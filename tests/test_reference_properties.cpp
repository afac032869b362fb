// Properties of the float64 reference: softmax rows sum to 1, masked weights are exactly 0,
// dropout keeps about 1-p, the wrapper equals MultiHeadAttention with matching weights.
#include <catch2/catch.hpp>

#include <cmath>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "helpers.hpp"
#include "kernels/visibility.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;
using attn::reference::Matrix;

TEST_CASE("attention weights: rows sum to 1 and masked positions get exactly 0", "[reference]") {
  const auto rows = GENERATE(1, 5, 17);
  const auto extra = GENERATE(0, 3);  // fewer queries than keys: bottom-right alignment
  const auto window = GENERATE(0, 4);
  CAPTURE(rows, extra, window);
  const std::int64_t cols = rows + extra, d = 8;
  Matrix q(rows, d, [&] {
    auto v = test::random_floats(rows * d, 1);
    return std::vector<double>(v.begin(), v.end());
  }());
  Matrix k(cols, d, [&] {
    auto v = test::random_floats(cols * d, 2);
    return std::vector<double>(v.begin(), v.end());
  }());
  attn::reference::AttentionOptions o;
  o.scale = 0.35;
  o.causal = true;
  o.window = window;
  const Matrix w = attn::reference::attention_weights(q, k, o);
  for (std::int64_t i = 0; i < rows; ++i) {
    double sum = 0;
    for (std::int64_t j = 0; j < cols; ++j) {
      const bool visible =
          attn::kernels::visible_keys(static_cast<std::size_t>(i), static_cast<std::size_t>(rows),
                                      static_cast<std::size_t>(cols), true,
                                      static_cast<std::size_t>(window))
              .contains(static_cast<std::size_t>(j));
      if (!visible) CHECK(w(i, j) == 0.0);
      if (visible) CHECK(w(i, j) > 0.0);
      sum += w(i, j);
    }
    CHECK(std::abs(sum - 1.0) < 1e-12);
  }
}

TEST_CASE("dropout keeps about 1-p of a large matrix and scales survivors by 1/(1-p)",
          "[reference]") {
  const double p = GENERATE(0.1, 0.5, 0.8);
  attn::TorchGenerator gen(42);
  const Matrix ones(300, 300, std::vector<double>(90000, 1.0));
  const Matrix out = attn::reference::dropout(ones, p, gen);
  std::int64_t kept = 0;
  for (double v : out.values) {
    if (v != 0.0) {
      ++kept;
      CHECK(std::abs(v - 1.0 / (1.0 - p)) < 1e-12);
    }
  }
  const double frac = static_cast<double>(kept) / 90000.0;
  // Binomial standard deviation is at most 0.0017 here; allow 5 of them.
  CHECK(std::abs(frac - (1.0 - p)) < 0.0085);
  attn::TorchGenerator untouched(42);
  CHECK(attn::reference::dropout(ones, 0.0, untouched).values == ones.values);
  CHECK(untouched.next_u32() == attn::TorchGenerator(42).next_u32());  // p = 0 draws nothing
}

TEST_CASE("the wrapper equals MultiHeadAttention when the weights are arranged to match",
          "[reference]") {
  const std::int64_t d_in = 5, heads = 3, head_dim = 2, d_out = heads * head_dim, seq = 7;
  LayerConfig wrap = LayerConfig::chapter(Variant::kMultiHeadWrapper, d_in, d_out, heads, 16);
  wrap.qkv_bias = true;
  auto w = attn::init_weights_like_torch(wrap, 7);
  REQUIRE(w.ok());
  LayerConfig mha = wrap;
  mha.variant = Variant::kMultiHeadAttention;
  attn::Weights wm = w.value();
  wm.w_out = Tensor(Shape{d_out, d_out});
  for (std::int64_t i = 0; i < d_out; ++i)
    wm.w_out.data()[i * d_out + i] = 1.0f;  // identity out_proj
  wm.b_out = Tensor(Shape{d_out});
  const Tensor x(Shape{2, seq, d_in}, test::random_floats(2 * seq * d_in, 3));
  auto a = attn::reference::forward(wrap, w.value(), x.view());
  auto b = attn::reference::forward(mha, wm, x.view());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(test::max_error(b->values, a->values, 1e-12, 1e-12) <= 1.0);
  // And through the fast engine.
  auto ea = attn::Engine::create(wrap, w.value());
  auto eb = attn::Engine::create(mha, wm);
  REQUIRE(ea.ok());
  REQUIRE(eb.ok());
  Tensor ya(Shape{2, seq, d_out}), yb(Shape{2, seq, d_out});
  REQUIRE(ea->forward(x.view(), ya.view()).ok());
  REQUIRE(eb->forward(x.view(), yb.view()).ok());
  CHECK(test::max_error(yb.values(), ya.values()) <= 1.0);
}
