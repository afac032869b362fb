// Hostile numbers and sizes: NaN/Inf propagate to exactly the rows they should, huge
// magnitudes stay finite where the math is, degenerate sizes, overflowing shapes, limits.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/runtime.hpp"
#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<attn::Isa> isas() {
  std::vector<attn::Isa> out;
  for (attn::Isa i : {attn::Isa::kSse2, attn::Isa::kAvx2, attn::Isa::kAvx512})
    if (attn::resolve_isa(i).ok()) out.push_back(i);
  return out;
}

attn::Engine make(const LayerConfig& c, const attn::Weights& w, attn::Isa isa) {
  attn::RunOptions run;
  run.isa = isa;
  auto e = attn::Engine::create(c, w, run);
  REQUIRE(e.ok());
  return e.value();
}

bool row_all(const std::vector<float>& y, std::int64_t row, std::int64_t cols, bool nan) {
  for (std::int64_t j = 0; j < cols; ++j)
    if (std::isnan(y[row * cols + j]) != nan) return false;
  return true;
}

}  // namespace

TEST_CASE("a NaN token poisons exactly the rows that attend to it", "[hostile]") {
  const std::int64_t seq = 70, d = 16, t_bad = 37;
  const bool causal = GENERATE(true, false);
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, d, d, 2, 2, seq, true, causal, 4);
  c.x.data()[(0 * seq + t_bad) * d + 3] = kNaN;  // batch item 0 only
  for (attn::Isa isa : isas()) {
    CAPTURE(attn::to_string(isa), causal);
    for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
      const std::vector<float> y = test::run_engine(make(c.config, c.weights, isa), c.x, impl);
      REQUIRE(y.size() == static_cast<std::size_t>(2 * seq * d));
      for (std::int64_t i = 0; i < seq; ++i) {
        CAPTURE(i);
        // Causal: rows before the bad token never see it (the unfused path, like the
        // chapter's PyTorch code, multiplies masked zeros by V, so 0 * NaN reaches them:
        // documented). Batch item 1 is never affected.
        if (impl == attn::AttentionImpl::kFused || i >= t_bad || !causal) {
          CHECK(row_all(y, i, d, /*nan=*/!causal || i >= t_bad));
        }
        CHECK(row_all(y, seq + i, d, /*nan=*/false));
      }
    }
  }
}

TEST_CASE("NaN or Inf in masked (future) values never reach the output", "[hostile]") {
  // The simplified variant uses x itself as keys and values: poison the last token with Inf
  // and NaN; with the causal mask only the last row may see it.
  const std::int64_t seq = 130, d = 8;
  LayerConfig c = LayerConfig::chapter(Variant::kSimplified, d, d, 1, seq);
  c.mask = attn::Mask::kCausal;
  Tensor x(Shape{1, seq, d}, test::random_floats(seq * d, 9));
  x.data()[(seq - 1) * d + 0] = std::numeric_limits<float>::infinity();
  x.data()[(seq - 1) * d + 1] = kNaN;
  for (attn::Isa isa : isas()) {
    CAPTURE(attn::to_string(isa));
    const std::vector<float> y = test::run_engine(make(c, {}, isa), x);
    for (std::int64_t i = 0; i + 1 < seq; ++i) {
      CAPTURE(i);
      for (std::int64_t j = 0; j < d; ++j) REQUIRE(std::isfinite(y[i * d + j]));
    }
    CHECK(std::isnan(y[(seq - 1) * d + 1]));
  }
}

TEST_CASE("a NaN weight poisons only its own head in the wrapper, every column after out_proj",
          "[hostile]") {
  const std::int64_t d_in = 6, heads = 3, hd = 2, d_out = heads * hd, seq = 9;
  test::EngineCase wrap =
      test::make_case(Variant::kMultiHeadWrapper, d_in, d_out, heads, 1, seq, false, true, 2);
  wrap.weights.w_value.data()[(1 * hd) * d_in + 2] = kNaN;  // head 1's first value feature
  test::EngineCase mha =
      test::make_case(Variant::kMultiHeadAttention, d_in, d_out, heads, 1, seq, false, true, 2);
  mha.weights.w_value.data()[(1 * hd) * d_in + 2] = kNaN;
  for (attn::Isa isa : isas()) {
    CAPTURE(attn::to_string(isa));
    const std::vector<float> yw = test::run_engine(make(wrap.config, wrap.weights, isa), wrap.x);
    const std::vector<float> ym = test::run_engine(make(mha.config, mha.weights, isa), mha.x);
    for (std::int64_t i = 0; i < seq; ++i) {
      CAPTURE(i);
      CHECK(std::isnan(yw[i * d_out + hd]));         // head 1, feature 0
      CHECK(std::isfinite(yw[i * d_out + hd + 1]));  // head 1, feature 1: other value row
      CHECK(std::isfinite(yw[i * d_out + 0]));       // head 0
      CHECK(std::isfinite(yw[i * d_out + 2 * hd]));  // head 2
      CHECK(row_all(ym, i, d_out, /*nan=*/true));    // out_proj mixes every head
    }
  }
}

TEST_CASE("huge magnitudes: softmax stays finite where the math is finite", "[hostile]") {
  const std::int64_t seq = 40, d = 4;
  // Scores up to ~4e36 (finite in float32): a stable softmax gives one-hot weights.
  LayerConfig c = LayerConfig::chapter(Variant::kSimplified, d, d, 1, seq);
  Tensor x(Shape{1, seq, d}, test::random_floats(seq * d, 5, -1e18f, 1e18f));
  auto want = attn::reference::forward(c, {}, x.view());
  REQUIRE(want.ok());
  // Values of 1e30 with all-zero query/key weights: uniform weights, output ~1e30.
  test::EngineCase big =
      test::make_case(Variant::kMultiHeadAttention, d, d, 2, 1, seq, false, true, 6);
  std::fill(big.weights.w_query.values().begin(), big.weights.w_query.values().end(), 0.0f);
  std::fill(big.weights.w_key.values().begin(), big.weights.w_key.values().end(), 0.0f);
  for (float& v : big.x.values()) v *= 1e30f;
  auto want_big = attn::reference::forward(big.config, big.weights, big.x.view());
  REQUIRE(want_big.ok());
  for (attn::Isa isa : isas()) {
    for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
      CAPTURE(attn::to_string(isa));
      const std::vector<float> y = test::run_engine(make(c, {}, isa), x, impl);
      for (float v : y) REQUIRE(std::isfinite(v));
      CHECK(test::max_error(y, want->values, 1e-5, 1e-5) <= 1.0);
      const std::vector<float> yb =
          test::run_engine(make(big.config, big.weights, isa), big.x, impl);
      for (float v : yb) REQUIRE(std::isfinite(v));
      CHECK(test::max_error(yb, want_big->values, 0.0, 1e-4) <= 1.0);
    }
  }
}

TEST_CASE("all-equal scores average the visible values, seq_len 1 returns its own value",
          "[hostile]") {
  const std::int64_t d = 5, seq = 33;
  LayerConfig c = LayerConfig::chapter(Variant::kSimplified, d, d, 1, seq);
  c.mask = attn::Mask::kCausal;
  Tensor x(Shape{1, seq, d});
  for (std::int64_t i = 0; i < seq; ++i)
    for (std::int64_t j = 0; j < d; ++j) x.data()[i * d + j] = 0.25f * static_cast<float>(j + 1);
  for (attn::Isa isa : isas()) {
    const std::vector<float> y = test::run_engine(make(c, {}, isa), x);
    for (std::int64_t k = 0; k < seq * d; ++k) CHECK(y[k] == Approx(x.data()[k]).epsilon(1e-6));
    Tensor one(Shape{1, 1, d}, std::vector<float>(x.data(), x.data() + d));
    const std::vector<float> y1 = test::run_engine(make(c, {}, isa), one);
    for (std::int64_t j = 0; j < d; ++j) CHECK(y1[j] == x.data()[j]);  // weight exactly 1
  }
}

TEST_CASE("shapes whose products overflow are refused, not wrapped around", "[hostile][errors]") {
  LayerConfig c =
      LayerConfig::chapter(Variant::kMultiHeadAttention, 8, 8, 2, std::int64_t{1} << 30);
  auto w = attn::init_weights_like_torch(c, 1);
  REQUIRE(w.ok());
  auto e = attn::Engine::create(c, w.value());
  REQUIRE(e.ok());
  const float dummy[8] = {};
  Tensor y(Shape{1, 1, 8});
  // 2^40 x 2^30 x 8 overflows int64; 2^31 x 2^30 x 8 fits int64 but the outputs
  // (x 16 bytes per element) cannot be addressed.
  for (Shape s : {Shape{std::int64_t{1} << 40, std::int64_t{1} << 30, 8},
                  Shape{std::int64_t{1} << 31, std::int64_t{1} << 30, 8}}) {
    CAPTURE(s.to_string());
    const attn::Status st = e->forward(attn::ConstTensorView(dummy, s), y.view());
    CHECK_FALSE(st.ok());
    CHECK((st.code() == attn::ErrorCode::kInvalidArgument ||
           st.code() == attn::ErrorCode::kResourceExhausted));
  }
  // LayerConfig sizes beyond the documented bounds are refused.
  LayerConfig huge =
      LayerConfig::chapter(Variant::kMultiHeadAttention, std::int64_t{1} << 40, 8, 2, 16);
  CHECK(attn::validate(huge).code() == attn::ErrorCode::kInvalidArgument);
}

TEST_CASE("a call needing more workspace than max_workspace_bytes is refused",
          "[hostile][limits]") {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 32, 32, 2, 1, 256, true, true, 3);
  c.options.threads = 1;
  Tensor x_small(Shape{1, 8, 32}, test::random_floats(8 * 32, 1)), y_small(Shape{1, 8, 32});
  // The smallest limit (in 4 KiB steps) at which an 8-token call runs: kernel scratch plus a
  // few KiB of activations. A 256-token call needs ~96 KiB more activations than that.
  std::int64_t limit = 0;
  for (std::int64_t l = 4096; l <= (std::int64_t{8} << 20) && limit == 0; l += 4096) {
    c.options.max_workspace_bytes = l;
    auto probe = attn::Engine::create(c.config, c.weights, c.options);
    REQUIRE(probe.ok());
    if (probe->forward(x_small.view(), y_small.view()).ok()) limit = l;
  }
  REQUIRE(limit > 0);
  c.options.max_workspace_bytes = limit;
  auto e = attn::Engine::create(c.config, c.weights, c.options);
  REQUIRE(e.ok());
  Tensor y(Shape{1, 256, 32});
  std::fill(y.values().begin(), y.values().end(), 7.0f);
  const attn::Status s = e->forward(c.x.view(), y.view());
  CHECK(s.code() == attn::ErrorCode::kResourceExhausted);
  CHECK_THAT(s.message(), Catch::Contains("max_workspace_bytes = " + std::to_string(limit)));
  for (float v : y.values()) REQUIRE(v == 7.0f);
  // A small call still fits in the same engine after the refusal.
  CHECK(e->forward(x_small.view(), y_small.view()).ok());
  // Negative limits are a config error.
  c.options.max_workspace_bytes = -1;
  CHECK(attn::Engine::create(c.config, c.weights, c.options).status().code() ==
        attn::ErrorCode::kInvalidArgument);
}

TEST_CASE("allocation failure surfaces as an error", "[hostile][limits]") {
  // 2^27 tokens x 3 x 4096 features of activations is 6 TiB: no machine here has it.
  LayerConfig c =
      LayerConfig::chapter(Variant::kMultiHeadAttention, 4, 4096, 1, std::int64_t{1} << 20);
  c.d_in = 4;
  auto w = attn::init_weights_like_torch(c, 1);
  REQUIRE(w.ok());
  auto e = attn::Engine::create(c, w.value());
  REQUIRE(e.ok());
  const float dummy[4] = {};
  Tensor y(Shape{1, 1, 4096});
  const attn::Status s =
      e->forward(attn::ConstTensorView(dummy, Shape{128, std::int64_t{1} << 20, 4}),
                 attn::TensorView{y.data(), Shape{128, std::int64_t{1} << 20, 4096}});
  CHECK(s.code() == attn::ErrorCode::kResourceExhausted);
  CHECK_THAT(s.message(), Catch::Contains("activations"));
}
