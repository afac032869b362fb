// The layers served today (issue 14): grouped-query heads, an explicit head_dim,
// a scale override, rotary position embeddings, soft-capping and ALiBi, through forward (fused and
// unfused), prefill, step and the batched step, against the float64 reference.
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
  // (context_length 32 rounded up to one block of CachePool::block_positions() = 128)
  CHECK(s->cache_bytes() == 2 * 4 /* head_dim */ * 128 * sizeof(float));
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

TEST_CASE("ALiBi slopes are the paper's, including head counts that are not powers of two",
          "[engine][layers][alibi]") {
  // get_slopes(8) and get_slopes(12) of Press et al. (BLOOM's build_alibi_tensor).
  const std::vector<double> want8 = {0.5,     0.25,     0.125,     0.0625,
                                     0.03125, 0.015625, 0.0078125, 0.00390625};
  CHECK(attn::alibi_slopes(8) == want8);
  const std::vector<double> got12 = attn::alibi_slopes(12);
  std::vector<double> want12 = want8;
  for (double e : {-0.5, -1.5, -2.5, -3.5}) want12.push_back(std::exp2(e));
  REQUIRE(got12.size() == 12);
  for (std::size_t i = 0; i < 12; ++i) CHECK(got12[i] == Approx(want12[i]).epsilon(1e-15));
  CHECK(got12[8] == Approx(0.7071067811865476).epsilon(1e-15));
  CHECK(got12[11] == Approx(0.08838834764831845).epsilon(1e-15));
  CHECK(attn::alibi_slopes(1) == std::vector<double>{0.00390625});
  const std::vector<double> got3 = attn::alibi_slopes(3);  // 2 heads' slopes, then 4's first
  REQUIRE(got3.size() == 3);
  CHECK(got3[0] == 0.0625);
  CHECK(got3[1] == 0.00390625);
  CHECK(got3[2] == 0.25);
}

TEST_CASE("soft-capping and ALiBi match the float64 reference, fused and unfused",
          "[engine][layers][softcap][alibi]") {
  // num_heads, num_kv_heads, head_dim, softcap, alibi
  using Row = std::tuple<int, int, int, double, bool>;
  const auto row = GENERATE(Row{1, 1, 1, 0.5, false},     // head_dim 1, saturated cap
                            Row{3, 3, 3, 0.0, true},      // 3 heads: not a power of two
                            Row{8, 2, 64, 0.0, true},     // 8 heads, grouped
                            Row{12, 12, 80, 2.0, true},   // 12 heads, both
                            Row{2, 1, 128, 50.0, false},  // Gemma 2's attention cap
                            Row{4, 4, 128, 1.0, true});
  const auto [num_heads, num_kv_heads, head_dim, softcap, alibi] = row;
  CAPTURE(num_heads, num_kv_heads, head_dim, softcap, alibi);
  const std::int64_t d = 24, batch = 2;
  Layer l = make_layer(d, d, num_heads, num_kv_heads, head_dim, Rope::kNone, 0, 300, 17 + head_dim);
  l.config.softcap = softcap;
  l.config.alibi = alibi;
  l.config.scale = 0.5;  // larger scores, so the cap and the bias both matter
  for (std::int64_t seq_len : {1, 63, 129, 257}) {
    CAPTURE(seq_len);
    const Tensor x(Shape{batch, seq_len, d},
                   test::random_floats(batch * seq_len * d, 7 + seq_len, -2.0f, 2.0f));
    const std::vector<double> want = reference(l, x);
    for (attn::Isa isa : test::supported_isas()) {
      for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
        CAPTURE(attn::to_string(isa), impl == attn::AttentionImpl::kFused ? "fused" : "unfused");
        const std::vector<float> got = test::run_engine(make_engine(l, isa), x, impl);
        CHECK(test::max_error(got, want) <= 1.0);
      }
    }
  }
  // And they change the output (the features are not silently ignored).
  Layer plain = l;
  plain.config.softcap = 0;
  plain.config.alibi = false;
  const Tensor x(Shape{1, 9, d}, test::random_floats(9 * d, 3, -2.0f, 2.0f));
  if (num_heads * head_dim > 3) {
    CHECK(test::run_engine(make_engine(l), x) != test::run_engine(make_engine(plain), x));
  }
}

TEST_CASE("decode equals forward with soft-capping and ALiBi, past position 1000",
          "[engine][layers][session][softcap][alibi]") {
  // softcap, alibi, num_kv_heads
  using Row = std::tuple<double, bool, int>;
  const auto row = GENERATE(Row{3.0, false, 6}, Row{0.0, true, 6}, Row{1.5, true, 2});
  const auto [softcap, alibi, num_kv_heads] = row;
  CAPTURE(softcap, alibi, num_kv_heads);
  const std::int64_t total = 1040, d = 24, prompt = 1010;
  Layer l = make_layer(d, d, 6, num_kv_heads, 8, Rope::kNone, 0, total, 13);
  l.config.softcap = softcap;
  l.config.alibi = alibi;
  l.config.scale = 0.6;
  const Tensor x(Shape{total, d}, test::random_floats(total * d, 5, -2.0f, 2.0f));
  const std::vector<double> want = reference(l, x);
  std::vector<float> first;  // threads 1's output: every thread count gives its bits
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    attn::Engine engine = make_engine(l, attn::Isa::kAuto, threads, test::threaded_backend());
    auto a = engine.new_session();
    REQUIRE(a.ok());
    std::vector<float> got(total * d);
    REQUIRE(a->prefill(attn::ConstTensorView(x.data(), Shape{prompt, d}),
                       attn::TensorView(got.data(), Shape{prompt, d}))
                .ok());
    for (std::int64_t t = prompt; t < total; ++t) {
      REQUIRE(a->step(attn::ConstTensorView(x.data() + t * d, Shape{1, d}),
                      attn::TensorView(got.data() + t * d, Shape{1, d}))
                  .ok());
    }
    CHECK(test::max_error(got, want) <= 1.0);
    if (first.empty()) {
      first = got;
    } else {
      CHECK(got == first);
    }
  }
}

TEST_CASE("bad soft-capping and ALiBi settings are refused with the values named",
          "[engine][layers][errors][softcap][alibi]") {
  auto expect = [](const LayerConfig& c, const char* needle) {
    const attn::Status s = attn::validate(c);
    CAPTURE(s.to_string());
    CHECK(s.code() == attn::ErrorCode::kInvalidArgument);
    CHECK_THAT(s.message(), Catch::Contains(needle));
  };
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, 16, 16, 4, 32);
  c.softcap = -1;
  expect(c, "softcap = -1 must be finite and > 0");
  c.softcap = std::numeric_limits<double>::infinity();
  expect(c, "softcap = inf must be finite and > 0");
  c.softcap = std::nan("");
  expect(c, "softcap = nan must be finite and > 0");
  c.softcap = 30;
  CHECK(attn::validate(c).ok());
  c.alibi = true;
  CHECK(attn::validate(c).ok());
  c.rope = Rope::kNeox;
  expect(c, "alibi and rope = neox cannot be combined");
  c.rope = Rope::kGptj;
  expect(c, "alibi and rope = gptj cannot be combined");
}
