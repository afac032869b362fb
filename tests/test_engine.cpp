// The fast engine against the float64 reference: every variant, random configs, every
// instruction set, both attention paths; and its error reporting.
#include <catch2/catch.hpp>

#include <cstring>
#include <tuple>

#include "attn/chapter/random.hpp"
#include "attn/runtime.hpp"
#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

const attn::Isa kIsas[] = {attn::Isa::kSse2, attn::Isa::kAvx2, attn::Isa::kAvx512};

bool isa_runs(attn::Isa isa) { return attn::resolve_isa(isa).ok(); }

}  // namespace

TEST_CASE("engine matches the float64 reference for random configs", "[engine]") {
  // variant, d_in, d_out, heads, batch, seq_len, bias, causal
  using Row = std::tuple<Variant, int, int, int, int, int, bool, bool>;
  const auto row = GENERATE(Row{Variant::kSimplified, 5, 5, 1, 2, 9, false, false},
                            Row{Variant::kSimplified, 8, 8, 1, 1, 33, false, true},
                            Row{Variant::kSelfAttentionV1, 3, 2, 1, 1, 6, false, false},
                            Row{Variant::kSelfAttentionV2, 7, 5, 1, 3, 17, true, false},
                            Row{Variant::kCausalAttention, 7, 5, 1, 2, 1, false, true},
                            Row{Variant::kCausalAttention, 16, 12, 1, 2, 70, true, true},
                            Row{Variant::kMultiHeadWrapper, 9, 6, 3, 2, 31, false, true},
                            Row{Variant::kMultiHeadWrapper, 12, 8, 2, 1, 65, true, true},
                            Row{Variant::kMultiHeadAttention, 3, 2, 2, 2, 6, false, true},
                            Row{Variant::kMultiHeadAttention, 24, 24, 4, 3, 47, true, true},
                            Row{Variant::kMultiHeadAttention, 40, 48, 3, 1, 130, true, true},
                            Row{Variant::kMultiHeadAttention, 64, 64, 1, 2, 129, false, false},
                            Row{Variant::kMultiHeadAttention, 33, 80, 1, 1, 200, true, true});
  const auto [variant, d_in, d_out, heads, batch, seq, bias, causal] = row;
  CAPTURE(attn::to_string(variant), d_in, d_out, heads, batch, seq, bias, causal);
  const test::EngineCase c = test::make_case(variant, d_in, d_out, heads, batch, seq, bias, causal,
                                             static_cast<std::uint64_t>(d_in * 1000 + seq));
  const std::vector<double> want = test::run_reference(c);
  REQUIRE(!want.empty());
  for (attn::Isa isa : kIsas) {
    if (!isa_runs(isa)) {
      WARN("instruction set " << attn::to_string(isa) << " not available here: not tested");
      continue;
    }
    attn::RunOptions run;
    run.isa = isa;
    auto engine = attn::Engine::create(c.config, c.weights, run);
    REQUIRE(engine.ok());
    for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
      CAPTURE(attn::to_string(isa), impl == attn::AttentionImpl::kFused ? "fused" : "unfused");
      const std::vector<float> got = test::run_engine(engine.value(), c.x, impl);
      REQUIRE(got.size() == want.size());
      CHECK(test::max_error(got, want) <= 1.0);
    }
  }
}

TEST_CASE("engine accepts [seq_len, d_in] and returns [seq_len, d_out]", "[engine]") {
  test::EngineCase c = test::make_case(Variant::kMultiHeadAttention, 6, 4, 2, 1, 5, true, true, 3);
  auto engine = attn::Engine::create(c.config, c.weights);
  REQUIRE(engine.ok());
  const Tensor x2(Shape{5, 6}, c.x.values());
  Tensor y2(Shape{5, 4}), y3(Shape{1, 5, 4});
  REQUIRE(engine->forward(x2.view(), y2.view()).ok());
  REQUIRE(engine->forward(c.x.view(), y3.view()).ok());
  CHECK(y2.values() == y3.values());
}

TEST_CASE("errors name the parameter and leave the output untouched", "[engine][errors]") {
  test::EngineCase c = test::make_case(Variant::kMultiHeadAttention, 6, 4, 2, 1, 5, true, true, 3);
  auto engine = attn::Engine::create(c.config, c.weights);
  REQUIRE(engine.ok());
  const float sentinel = 12345.0f;
  auto expect_error = [&](const Tensor& x, Shape out_shape, attn::ErrorCode code,
                          const char* needle) {
    Tensor y(out_shape);
    std::fill(y.values().begin(), y.values().end(), sentinel);
    const attn::Status s = engine->forward(x.view(), y.view());
    CAPTURE(s.to_string());
    CHECK(s.code() == code);
    CHECK_THAT(s.message(), Catch::Contains(needle));
    for (float v : y.values()) REQUIRE(v == sentinel);
  };
  expect_error(Tensor(Shape{1, 6, 6}), Shape{1, 6, 4}, attn::ErrorCode::kOutOfRange,
               "context_length = 5");
  expect_error(Tensor(Shape{1, 5, 7}), Shape{1, 5, 4}, attn::ErrorCode::kInvalidArgument,
               "d_in = 6");
  expect_error(Tensor(Shape{0, 5, 6}), Shape{0, 5, 4}, attn::ErrorCode::kInvalidArgument,
               "batch = 0");
  expect_error(Tensor(Shape{1, 0, 6}), Shape{1, 0, 4}, attn::ErrorCode::kInvalidArgument,
               "seq_len = 0");
  expect_error(Tensor(Shape{1, 5, 6}), Shape{1, 5, 5}, attn::ErrorCode::kInvalidArgument,
               "out has shape [1, 5, 5]");
  expect_error(Tensor(Shape{5}), Shape{5, 4}, attn::ErrorCode::kInvalidArgument,
               "[batch, seq_len, d_in]");
  // A negative size in a view cannot wrap around into a huge loop.
  Tensor y(Shape{1, 5, 4});
  const attn::Status neg =
      engine->forward(attn::ConstTensorView(c.x.data(), Shape{-1, 5, 6}), y.view());
  CHECK(neg.code() == attn::ErrorCode::kInvalidArgument);
}

TEST_CASE("invalid configs and weights are refused with the values in the message",
          "[engine][errors]") {
  auto expect = [](const LayerConfig& config, const attn::Weights& w, const char* needle) {
    auto e = attn::Engine::create(config, w);
    REQUIRE_FALSE(e.ok());
    CAPTURE(e.status().to_string());
    CHECK(e.status().code() == attn::ErrorCode::kInvalidArgument);
    CHECK_THAT(e.status().message(), Catch::Contains(needle));
  };
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, 6, 5, 2, 16);
  expect(c, {}, "d_out = 5 is not divisible by num_heads = 2");
  c = LayerConfig::chapter(Variant::kMultiHeadAttention, 0, 4, 2, 16);
  expect(c, {}, "d_in = 0");
  c = LayerConfig::chapter(Variant::kMultiHeadAttention, 6, -4, 2, 16);
  expect(c, {}, "d_out = -4");
  c = LayerConfig::chapter(Variant::kMultiHeadAttention, 6, 4, 2, 0);
  expect(c, {}, "context_length = 0");
  c = LayerConfig::chapter(Variant::kMultiHeadAttention, 6, 4, 0, 16);
  expect(c, {}, "num_heads = 0");
  c = LayerConfig::chapter(Variant::kCausalAttention, 6, 4, 2, 16);
  expect(c, {}, "num_heads = 2");
  c = LayerConfig::chapter(Variant::kMultiHeadAttention, 6, 4, 2, 16);
  auto w = attn::init_weights_like_torch(c, 1);
  REQUIRE(w.ok());
  attn::Weights bad = w.value();
  bad.w_key = Tensor(Shape{4, 7});
  expect(c, bad, "weight w_key has shape [4, 7]");
  bad = w.value();
  bad.b_query = Tensor(Shape{4});
  expect(c, bad, "qkv_bias is false");
  c.window = 3;
  c.mask = attn::Mask::kNone;
  expect(c, w.value(), "window = 3 needs causal attention (variant mha, mask none)");
}

TEST_CASE("a mask that contradicts the variant is refused, the default mask is the variant's",
          "[engine][errors]") {
  for (Variant v : {Variant::kCausalAttention, Variant::kMultiHeadWrapper}) {
    LayerConfig c = LayerConfig::chapter(v, 6, 4, 1, 16);
    c.mask = attn::Mask::kNone;
    const attn::Status s = attn::validate(c);
    CAPTURE(s.to_string());
    CHECK(s.code() == attn::ErrorCode::kInvalidArgument);
    CHECK_THAT(s.message(), Catch::Contains(std::string("variant ") + attn::to_string(v) +
                                            " contradicts mask none"));
  }
  // A hand-built config takes its variant's mask: 3.3/3.4 none, the causal classes causal.
  LayerConfig v1;
  v1.variant = Variant::kSelfAttentionV1;
  CHECK_FALSE(v1.causal());
  v1.variant = Variant::kCausalAttention;
  CHECK(v1.causal());
  v1.mask = attn::Mask::kNone;
  v1.variant = Variant::kMultiHeadAttention;
  CHECK_FALSE(v1.causal());
}

TEST_CASE("an unavailable instruction set is refused, not run", "[engine][errors]") {
  LayerConfig c = LayerConfig::chapter(Variant::kSimplified, 4, 4, 1, 8);
  for (attn::Isa isa : kIsas) {
    attn::RunOptions run;
    run.isa = isa;
    auto e = attn::Engine::create(c, {}, run);
    if (isa_runs(isa)) {
      REQUIRE(e.ok());
      CHECK(std::string(e->isa()) == attn::to_string(isa));
    } else {
      REQUIRE_FALSE(e.ok());
      CHECK(e.status().code() == attn::ErrorCode::kUnsupported);
    }
  }
}
