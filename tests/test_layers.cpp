// The layers served today (issue 14, first part): grouped-query heads, an explicit head_dim,
// a scale override and rotary position embeddings, through forward (fused and unfused),
// prefill, step and the batched step, against the float64 reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Rope;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

struct Layer {
  LayerConfig config;
  attn::Weights weights;
};

Layer make_layer(std::int64_t d_in, std::int64_t d_out, std::int64_t num_heads,
                 std::int64_t num_kv_heads, std::int64_t head_dim, Rope rope, std::int64_t rope_dim,
                 std::int64_t context_length, std::uint64_t seed) {
  Layer l;
  l.config =
      LayerConfig::chapter(Variant::kMultiHeadAttention, d_in, d_out, num_heads, context_length);
  l.config.qkv_bias = true;
  l.config.num_kv_heads = num_kv_heads;
  l.config.head_dim = head_dim;
  l.config.rope = rope;
  l.config.rope_dim = rope_dim;
  l.config.rope_theta = 500.0;  // small, so that positions past 1000 turn every pair many times
  auto w = attn::init_weights_like_torch(l.config, seed);
  REQUIRE(w.ok());
  l.weights = std::move(w.value());
  return l;
}

attn::Engine make_engine(const Layer& l, attn::Isa isa = attn::Isa::kAuto, int threads = 1,
                         attn::Backend backend = attn::Backend::kSerial) {
  attn::RunOptions run;
  run.isa = isa;
  run.threads = threads;
  run.backend = backend;
  auto e = attn::Engine::create(l.config, l.weights, run);
  INFO(e.status().to_string());
  REQUIRE(e.ok());
  return e.value();
}

std::vector<double> reference(const Layer& l, const Tensor& x) {
  auto r = attn::reference::forward(l.config, l.weights, x.view());
  INFO(r.status().to_string());
  REQUIRE(r.ok());
  return r->values;
}

}  // namespace

TEST_CASE("grouped-query heads, head_dim, scale and rotary embeddings match the float64 reference",
          "[engine][layers]") {
  // d_in, d_out, num_heads, num_kv_heads, head_dim, rope, rope_dim
  using Row = std::tuple<int, int, int, int, int, Rope, int>;
  const auto row = GENERATE(Row{16, 16, 4, 1, 0, Rope::kNone, 0},    // multi-query
                            Row{16, 16, 4, 2, 0, Rope::kNeox, 0},    // grouped, rotary
                            Row{24, 24, 4, 4, 0, Rope::kGptj, 0},    // plain MHA, gptj
                            Row{12, 20, 2, 1, 80, Rope::kNeox, 32},  // head_dim 80, partial rotary
                            Row{10, 10, 3, 3, 1, Rope::kNone, 0},    // head_dim 1
                            Row{10, 6, 4, 2, 2, Rope::kGptj, 2},     // head_dim 2
                            Row{9, 9, 2, 1, 3, Rope::kNeox, 2},      // head_dim 3, rope_dim 2
                            Row{32, 64, 2, 2, 128, Rope::kNeox, 0},  // head_dim 128
                            Row{8, 8, 2, 1, 256, Rope::kGptj, 64});  // head_dim 256
  const auto [d_in, d_out, num_heads, num_kv_heads, head_dim, rope, rope_dim] = row;
  CAPTURE(d_in, d_out, num_heads, num_kv_heads, head_dim, attn::to_string(rope), rope_dim);
  const std::int64_t batch = 2, seq_len = 37;
  Layer l =
      make_layer(d_in, d_out, num_heads, num_kv_heads, head_dim, rope, rope_dim, 64, 3 + d_out);
  if (head_dim == 3) l.config.scale = 0.3;  // a scale override
  const Tensor x(Shape{batch, seq_len, d_in}, test::random_floats(batch * seq_len * d_in, 7));
  const std::vector<double> want = reference(l, x);
  for (attn::Isa isa : test::supported_isas()) {
    for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
      CAPTURE(attn::to_string(isa), impl == attn::AttentionImpl::kFused ? "fused" : "unfused");
      const std::vector<float> got = test::run_engine(make_engine(l, isa), x, impl);
      CHECK(test::max_error(got, want) <= 1.0);
    }
  }
}

TEST_CASE("decode equals forward with grouped heads and rotary embeddings, past position 1000",
          "[engine][layers][session]") {
  const Rope rope = GENERATE(Rope::kNeox, Rope::kGptj);
  CAPTURE(attn::to_string(rope));
  const std::int64_t total = 1040, d = 24;
  const Layer l = make_layer(d, d, 4, 2, 8, rope, 6, total, 11);
  const Tensor x(Shape{total, d}, test::random_floats(total * d, 5));
  const std::vector<double> want = reference(l, x);
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    attn::Engine engine = make_engine(l, attn::Isa::kAuto, threads, test::threaded_backend());
    // Two sessions: one prefilled with 1010 tokens then stepped alone, the other prefilled in
    // two chunks then stepped in batched calls beside a third (fresh) session.
    auto a = engine.new_session(), b = engine.new_session(), c = engine.new_session();
    REQUIRE((a.ok() && b.ok() && c.ok()));
    std::vector<float> got_a(total * d), got_b(total * d), scratch(total * d);
    const std::int64_t prompt = 1010;
    auto rows = [&](const float* base, std::int64_t r0, std::int64_t n) {
      return attn::ConstTensorView(base + r0 * d, Shape{n, d});
    };
    auto out_rows = [&](std::vector<float>& y, std::int64_t r0, std::int64_t n) {
      return attn::TensorView(y.data() + r0 * d, Shape{n, d});
    };
    REQUIRE(a->prefill(rows(x.data(), 0, prompt), out_rows(got_a, 0, prompt)).ok());
    REQUIRE(b->prefill(rows(x.data(), 0, 400), out_rows(got_b, 0, 400)).ok());
    REQUIRE(b->prefill(rows(x.data(), 400, prompt - 400), out_rows(got_b, 400, prompt - 400)).ok());
    for (std::int64_t t = prompt; t < total; ++t) {
      REQUIRE(a->step(rows(x.data(), t, 1), out_rows(got_a, t, 1)).ok());
      std::vector<float> two_in(2 * d), two_out(2 * d);
      std::memcpy(two_in.data(), x.data() + t * d, d * sizeof(float));
      std::memcpy(two_in.data() + d, x.data() + (t - prompt) * d, d * sizeof(float));
      attn::Session* both[] = {&b.value(), &c.value()};
      REQUIRE(engine
                  .step(both, attn::ConstTensorView(two_in.data(), Shape{2, d}),
                        attn::TensorView(two_out.data(), Shape{2, d}))
                  .ok());
      std::memcpy(got_b.data() + t * d, two_out.data(), d * sizeof(float));
      std::memcpy(scratch.data() + (t - prompt) * d, two_out.data() + d, d * sizeof(float));
    }
    CHECK(test::max_error(got_a, want) <= 1.0);
    CHECK(test::max_error(got_b, want) <= 1.0);
    // The third session saw tokens 0..29 one at a time: the first 30 rows of the forward.
    const std::int64_t n_c = total - prompt;
    CHECK(test::max_error(std::span<const float>(scratch.data(), n_c * d),
                          std::span<const double>(want.data(), n_c * d)) <= 1.0);
    CHECK(a->position() == total);
  }
}

TEST_CASE("properties: kv heads = heads is MHA, rotary embeddings turn nothing at position 0",
          "[engine][layers]") {
  const std::int64_t d = 16, seq_len = 21;
  const Tensor x(Shape{1, seq_len, d}, test::random_floats(seq_len * d, 9));
  Layer mha = make_layer(d, d, 4, 0, 0, Rope::kNone, 0, 32, 5);
  Layer same = mha;
  same.config.num_kv_heads = 4;
  CHECK(test::run_engine(make_engine(mha), x) == test::run_engine(make_engine(same), x));

  // One token is at position 0: with or without rotary embeddings, the same bits.
  const Tensor one(Shape{1, 1, d}, test::random_floats(d, 10));
  Layer rotary = mha;
  rotary.config.rope = Rope::kNeox;
  const std::vector<float> plain = test::run_engine(make_engine(mha), one);
  CHECK(test::run_engine(make_engine(rotary), one) == plain);
  rotary.config.rope = Rope::kGptj;
  CHECK(test::run_engine(make_engine(rotary), one) == plain);
  // ... and at later positions it does change the output.
  CHECK(test::run_engine(make_engine(rotary), x) != test::run_engine(make_engine(mha), x));

  // The key/value cache holds kv heads only.
  Layer gqa = make_layer(d, d, 4, 1, 0, Rope::kNone, 0, 32, 5);
  auto s = make_engine(gqa).new_session();
  REQUIRE(s.ok());
  CHECK(s->cache_bytes() == 2 * 4 /* head_dim */ * 32 * sizeof(float));
}

TEST_CASE("bad layer settings are refused with the values named", "[engine][layers][errors]") {
  auto expect = [](const LayerConfig& c, const char* needle) {
    const attn::Status s = attn::validate(c);
    CAPTURE(s.to_string());
    CHECK(s.code() == attn::ErrorCode::kInvalidArgument);
    CHECK_THAT(s.message(), Catch::Contains(needle));
  };
  const LayerConfig base = LayerConfig::chapter(Variant::kMultiHeadAttention, 16, 16, 4, 32);
  LayerConfig c = base;
  c.num_kv_heads = 3;
  expect(c, "num_heads = 4 is not divisible by num_kv_heads = 3");
  c = base;
  c.num_kv_heads = 8;
  expect(c, "num_kv_heads = 8 is out of range [0, 4]");
  c = base;
  c.rope = Rope::kNeox;
  c.rope_dim = 3;
  expect(c, "rope_dim = 3 must be even and in [0, head_dim = 4]");
  c.rope_dim = 6;
  expect(c, "rope_dim = 6 must be even and in [0, head_dim = 4]");
  c.rope_dim = 0;
  c.rope_theta = std::numeric_limits<double>::infinity();
  expect(c, "rope_theta = inf must be finite and > 0");
  c = base;
  c.scale = std::nan("");
  expect(c, "scale = nan must be finite and > 0");
  c = base;
  c.head_dim = 3;
  c.rope = Rope::kNeox;
  expect(c, "rope_dim = head_dim = 3 must be even");
  c = LayerConfig::chapter(Variant::kSimplified, 8, 8, 1, 16);
  c.rope = Rope::kNeox;
  expect(c, "variant simplified has no projections to rotate");
  c = LayerConfig::chapter(Variant::kMultiHeadWrapper, 8, 8, 2, 16);
  c.num_kv_heads = 1;
  expect(c, "grouped-query attention needs variant mha");
  c = LayerConfig::chapter(Variant::kCausalAttention, 8, 8, 1, 16);
  c.head_dim = 4;
  expect(c, "num_heads x head_dim must equal d_out");
  // Weights shaped for MHA do not fit a grouped layer: the tensor and both shapes are named.
  LayerConfig gqa = base;
  auto w = attn::init_weights_like_torch(base, 1);
  REQUIRE(w.ok());
  gqa.num_kv_heads = 2;
  const auto e = attn::Engine::create(gqa, w.value());
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.status().message(), Catch::Contains("weight w_key has shape [16, 16]"));
  CHECK_THAT(e.status().message(), Catch::Contains("expected [8, 16]"));
}
