// KV-cache sessions: prefill + steps equal a full causal forward, batched steps equal single
// steps, thread counts do not change bits, sliding windows, and errors.
#include <catch2/catch.hpp>

#include <cstring>

#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

attn::Engine make(const LayerConfig& c, const attn::Weights& w, const attn::RunOptions& run = {}) {
  auto e = attn::Engine::create(c, w, run);
  REQUIRE(e.ok());
  return e.value();
}

// Rows [r0, r0 + n) of a [rows, cols] tensor.
Tensor rows(const Tensor& t, std::int64_t r0, std::int64_t n) {
  const std::int64_t cols = t.shape()[-1];
  return Tensor(Shape{n, cols},
                std::vector<float>(t.data() + r0 * cols, t.data() + (r0 + n) * cols));
}

// Feeds x [T, d_in] as a prefill of `prompt` tokens then single steps; returns [T, d_out].
std::vector<float> run_incremental(attn::Session& s, const Tensor& x, std::int64_t prompt,
                                   std::int64_t d_out) {
  const std::int64_t total = x.shape()[0];
  std::vector<float> out;
  Tensor y(Shape{prompt, d_out});
  REQUIRE(s.prefill(rows(x, 0, prompt).view(), y.view()).ok());
  out = y.values();
  for (std::int64_t t = prompt; t < total; ++t) {
    Tensor y1(Shape{1, d_out});
    const attn::Status st = s.step(rows(x, t, 1).view(), y1.view());
    INFO(st.to_string());
    REQUIRE(st.ok());
    out.insert(out.end(), y1.values().begin(), y1.values().end());
  }
  CHECK(s.position() == total);
  return out;
}

}  // namespace

TEST_CASE("prefill then steps equal one full causal forward", "[session]") {
  using Row = std::tuple<Variant, int, int, int, int, int,
                         bool>;  // variant, d_in, d_out, heads, T, k, bias
  const auto row =
      GENERATE(Row{Variant::kMultiHeadAttention, 3, 2, 2, 4, 2, false},
               Row{Variant::kMultiHeadAttention, 48, 48, 4, 40, 25, true},
               Row{Variant::kMultiHeadAttention, 64, 128, 2, 1, 600, true},  // > one decode chunk
               Row{Variant::kCausalAttention, 7, 5, 1, 9, 5, true},
               Row{Variant::kMultiHeadWrapper, 10, 6, 3, 13, 7, false},
               Row{Variant::kSimplified, 6, 6, 1, 5, 4, false});
  const auto [variant, d_in, d_out, heads, prompt, steps, bias] = row;
  CAPTURE(attn::to_string(variant), d_in, d_out, heads, prompt, steps);
  const int total = prompt + steps;
  test::EngineCase c =
      test::make_case(variant, d_in, d_out, heads, 1, total, bias, true, 5 + total, total + 3);
  attn::Engine engine = make(c.config, c.weights);
  const std::vector<double> want = test::run_reference(c);
  const Tensor x2 = rows(Tensor(Shape{total, d_in}, c.x.values()), 0, total);
  auto session = engine.new_session();
  REQUIRE(session.ok());
  const std::vector<float> got = run_incremental(session.value(), x2, prompt, d_out);
  CHECK(test::max_error(got, want) <= 1.0);
  // reset() starts over and gives the same bits.
  session->reset();
  CHECK(session->position() == 0);
  CHECK(run_incremental(session.value(), x2, prompt, d_out) == got);
}

TEST_CASE("a batched step equals individual steps, for any thread count", "[session][threads]") {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 64, 64, 4, 1, 8, true, true, 77, 1200);
  const int prompts[] = {3, 700, 1, 64};  // sessions at different positions, some past a chunk
  std::vector<float> want;
  for (int threads : {1, 2, 3, 8}) {
    CAPTURE(threads);
    attn::RunOptions run;
    run.threads = threads;
    run.backend = test::threaded_backend();
    attn::Engine engine = make(c.config, c.weights, run);
    std::vector<attn::Session> batched, single;
    for (int p : prompts) {
      for (auto* list : {&batched, &single}) {
        auto s = engine.new_session();
        REQUIRE(s.ok());
        Tensor x(Shape{p, 64}, test::random_floats(p * 64, p));
        Tensor y(Shape{p, 64});
        REQUIRE(s->prefill(x.view(), y.view()).ok());
        list->push_back(std::move(s.value()));
      }
    }
    const Tensor x(Shape{4, 64}, test::random_floats(4 * 64, 99));
    Tensor y(Shape{4, 64});
    std::vector<attn::Session*> ptrs;
    for (auto& s : batched) ptrs.push_back(&s);
    attn::StepStats stats;
    REQUIRE(engine.step(ptrs, x.view(), y.view(), &stats).ok());
    CHECK(stats.cache_bytes_read == 2.0 * 4 * 16 * 4 * (4 + 701 + 2 + 65));
    std::vector<float> individual;
    for (std::size_t i = 0; i < 4; ++i) {
      Tensor y1(Shape{1, 64});
      REQUIRE(single[i].step(rows(x, i, 1).view(), y1.view()).ok());
      individual.insert(individual.end(), y1.values().begin(), y1.values().end());
      CHECK(single[i].position() == batched[i].position());
    }
    CHECK(y.values() == individual);
    if (want.empty()) want = y.values();
    CHECK(y.values() == want);
  }
}

TEST_CASE("a sliding window equals a full forward with the window mask", "[session]") {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 32, 32, 2, 1, 1100, true, true, 8, 1100);
  c.config.window = 600;  // the decode path then starts mid-chunk
  attn::Engine engine = make(c.config, c.weights);
  const std::vector<double> want = test::run_reference(c);
  // The fused forward with a window, and the incremental path.
  CHECK(test::max_error(test::run_engine(engine, c.x), want) <= 1.0);
  auto s = engine.new_session();
  REQUIRE(s.ok());
  const Tensor x2(Shape{1100, 32}, c.x.values());
  CHECK(test::max_error(run_incremental(s.value(), x2, 900, 32), want) <= 1.0);
}

TEST_CASE("session errors: full cache, shapes, foreign and repeated sessions, non-causal",
          "[session][errors]") {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 8, 8, 2, 1, 4, true, true, 1, 4);
  attn::Engine engine = make(c.config, c.weights);
  auto s = engine.new_session();
  REQUIRE(s.ok());
  CHECK(s->capacity() == 4);
  CHECK(s->cache_bytes() >= 2 * 8 * 4 * sizeof(float));
  Tensor y3(Shape{3, 8}), y1(Shape{1, 8});
  REQUIRE(s->prefill(Tensor(Shape{3, 8}).view(), y3.view()).ok());
  attn::Status st = s->prefill(Tensor(Shape{2, 8}).view(), Tensor(Shape{2, 8}).view());
  CHECK(st.code() == attn::ErrorCode::kOutOfRange);
  CHECK_THAT(st.message(), Catch::Contains("context_length = 4"));
  CHECK(s->position() == 3);
  REQUIRE(s->step(Tensor(Shape{1, 8}).view(), y1.view()).ok());
  st = s->step(Tensor(Shape{1, 8}).view(), y1.view());
  CHECK(st.code() == attn::ErrorCode::kOutOfRange);
  CHECK_THAT(st.message(), Catch::Contains("full"));
  CHECK(s->position() == 4);

  auto fresh = engine.new_session();
  REQUIRE(fresh.ok());
  st = fresh->step(Tensor(Shape{1, 7}).view(), y1.view());
  CHECK(st.code() == attn::ErrorCode::kInvalidArgument);
  CHECK_THAT(st.message(), Catch::Contains("[1, 8]"));
  st = fresh->prefill(Tensor(Shape{2, 8}).view(), Tensor(Shape{2, 5}).view());
  CHECK(st.code() == attn::ErrorCode::kInvalidArgument);
  CHECK(fresh->position() == 0);

  attn::Engine other = make(c.config, c.weights);
  attn::Session* both[] = {&fresh.value(), &fresh.value()};
  st = engine.step(both, Tensor(Shape{2, 8}).view(), Tensor(Shape{2, 8}).view());
  CHECK_THAT(st.message(), Catch::Contains("same session"));
  attn::Session* foreign[] = {&fresh.value()};
  st = other.step(foreign, Tensor(Shape{1, 8}).view(), y1.view());
  CHECK_THAT(st.message(), Catch::Contains("another engine"));
  CHECK(fresh->position() == 0);

  LayerConfig nc = c.config;
  nc.mask = attn::Mask::kNone;
  auto non_causal = make(nc, c.weights).new_session();
  REQUIRE_FALSE(non_causal.ok());
  CHECK_THAT(non_causal.status().message(), Catch::Contains("causal"));
}

namespace {

// Inputs from a fixed LCG, and the FNV-1a hash of output bits: the signatures below were
// computed with the same code against libattn of main at 3d73ece (contiguous caches), g++ 12,
// release preset, before the paged cache.
std::vector<float> lcg_floats(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  std::uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<float>(static_cast<std::int64_t>(s >> 40) - (1 << 23)) /
        static_cast<float>(1 << 23);
  }
  return v;
}

std::uint64_t fnv1a(const std::vector<float>& v) {
  std::uint64_t h = 1469598103934665603ull;
  for (float f : v) {
    std::uint32_t b;
    std::memcpy(&b, &f, 4);
    for (int i = 0; i < 4; ++i) {
      h ^= (b >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

}  // namespace

TEST_CASE("paged sessions keep the output bits of the contiguous cache", "[session][paged]") {
  using Row = std::tuple<attn::Isa, std::int64_t, std::uint64_t>;  // isa, window, signature
  const auto [isa, window, want] = GENERATE(Row{attn::Isa::kSse2, 0, 0x1a4a20bb791d8c87ull},
                                            Row{attn::Isa::kSse2, 600, 0xdfbbf12b4ffa7167ull},
                                            Row{attn::Isa::kAvx2, 0, 0x256d30a233e96d0cull},
                                            Row{attn::Isa::kAvx2, 600, 0xe2160f26741fe890ull});
  CAPTURE(attn::to_string(isa), window);
  LayerConfig cfg = LayerConfig::chapter(Variant::kMultiHeadAttention, 32, 32, 2, 1100);
  cfg.qkv_bias = true;
  cfg.window = window;
  auto w = attn::init_weights_like_torch(cfg, 11);
  REQUIRE(w.ok());
  attn::RunOptions run;
  run.isa = isa;
  auto e = attn::Engine::create(cfg, w.value(), run);
  if (!e.ok()) {
    WARN("not run: " << e.status().to_string());
    return;
  }
  const std::int64_t total = 1100, d = 32;
  const Tensor x(Shape{total, d}, lcg_floats(total * d, 5));
  auto s = e->new_session();
  REQUIRE(s.ok());
  // Prefill of 700 in chunks of 1, 300 and 399, then 400 steps (windowed: decode starts
  // mid-chunk and mid-block).
  std::vector<float> out;
  std::int64_t at = 0;
  for (std::int64_t n : {1, 300, 399}) {
    Tensor y(Shape{n, d});
    REQUIRE(s->prefill(rows(x, at, n).view(), y.view()).ok());
    out.insert(out.end(), y.values().begin(), y.values().end());
    at += n;
  }
  for (; at < total; ++at) {
    Tensor y(Shape{1, d});
    REQUIRE(s->step(rows(x, at, 1).view(), y.view()).ok());
    out.insert(out.end(), y.values().begin(), y.values().end());
  }
  CHECK(fnv1a(out) == want);
}
