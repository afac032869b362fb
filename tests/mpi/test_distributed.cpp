// Heads across processes, run under `mpirun -np P` (P = 2, 3): every layer variant with
// heads against the single-process engine, forward and decode, determinism, errors.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/distributed.hpp"
#include "attn/engine.hpp"
#include "helpers.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

int g_size = 1;

struct Case {
  LayerConfig config;
  attn::Weights weights;
};

Case make(Variant variant, std::int64_t num_kv_heads, bool causal, std::int64_t context = 64) {
  Case c;
  // 12 heads of 4: d 48; the wrapper's heads are 4 wide too.
  c.config = LayerConfig::chapter(variant, 20, 48, 12, context);
  c.config.qkv_bias = true;
  c.config.num_kv_heads = num_kv_heads;
  c.config.mask = causal ? attn::Mask::kCausal : attn::Mask::kNone;
  if (variant == Variant::kMultiHeadAttention) c.config.rope = attn::Rope::kNeox;
  auto w = attn::init_weights_like_torch(c.config, 42);
  REQUIRE(w.ok());
  c.weights = std::move(w.value());
  return c;
}

std::vector<float> single_forward(const Case& c, const Tensor& x) {
  auto e = attn::Engine::create(c.config, c.weights);
  REQUIRE(e.ok());
  std::vector<float> y(static_cast<std::size_t>(x.numel() / c.config.d_in * c.config.d_out));
  const Shape& s = x.shape();
  REQUIRE(e->forward(x.view(), attn::TensorView(y.data(), Shape{s[0], s[1], c.config.d_out})).ok());
  return y;
}

attn::dist::DistributedEngine make_dist(const Case& c, bool all = true) {
  attn::dist::Options o;
  o.output_on_all_ranks = all;
  o.timeout_seconds = 30;
  auto e = attn::dist::DistributedEngine::create(attn::dist::Communicator::world(), c.config,
                                                 c.weights, o);
  INFO(e.status().to_string());
  REQUIRE(e.ok());
  return std::move(e.value());
}

}  // namespace

TEST_CASE("a forward split over the ranks equals one process, and repeats bit for bit", "[mpi]") {
  using Row = std::tuple<Variant, int, bool>;
  const auto row = GENERATE(
      Row{Variant::kMultiHeadAttention, 0, true}, Row{Variant::kMultiHeadAttention, 0, false},
      Row{Variant::kMultiHeadAttention, 6, true}, Row{Variant::kMultiHeadWrapper, 0, true});
  const auto [variant, kv_heads, causal] = row;
  CAPTURE(attn::to_string(variant), kv_heads, causal, g_size);
  const Case c = make(variant, kv_heads, causal);
  const Tensor x(Shape{2, 33, 20}, test::random_floats(2 * 33 * 20, 3));
  const std::vector<float> want = single_forward(c, x);
  auto engine = make_dist(c);
  std::vector<float> got(want.size(), 7.0f), again(want.size(), 8.0f);
  REQUIRE(engine.forward(x.view(), attn::TensorView(got.data(), Shape{2, 33, 48})).ok());
  REQUIRE(engine.forward(x.view(), attn::TensorView(again.data(), Shape{2, 33, 48})).ok());
  CHECK(test::max_error(got, want) <= 1.0);
  CHECK(std::memcmp(got.data(), again.data(), got.size() * sizeof(float)) == 0);
  if (variant == Variant::kMultiHeadWrapper) {
    CHECK(got == want);  // the wrapper gathers columns: no sum, the same bits
  }
}

TEST_CASE("decode split over the ranks equals one process's forward", "[mpi][session]") {
  const Case c = make(Variant::kMultiHeadAttention, 6, true, 48);
  const std::int64_t total = 40, prompt = 25;
  const Tensor x(Shape{1, total, 20}, test::random_floats(total * 20, 4));
  const std::vector<float> want = single_forward(c, x);
  auto engine = make_dist(c);
  auto a = engine.new_session(), b = engine.new_session();
  REQUIRE((a.ok() && b.ok()));
  std::vector<float> got(want.size(), 0.0f);
  REQUIRE(a->prefill(attn::ConstTensorView(x.data(), Shape{prompt, 20}),
                     attn::TensorView(got.data(), Shape{prompt, 48}))
              .ok());
  for (std::int64_t t = prompt; t < total; ++t) {
    // Session a takes token t; session b (fresh) takes token t - prompt: a batched step.
    std::vector<float> in(2 * 20), out(2 * 48);
    std::memcpy(in.data(), x.data() + t * 20, 20 * sizeof(float));
    std::memcpy(in.data() + 20, x.data() + (t - prompt) * 20, 20 * sizeof(float));
    attn::dist::DistributedSession* both[] = {&a.value(), &b.value()};
    REQUIRE(engine
                .step(both, attn::ConstTensorView(in.data(), Shape{2, 20}),
                      attn::TensorView(out.data(), Shape{2, 48}))
                .ok());
    std::memcpy(got.data() + t * 48, out.data(), 48 * sizeof(float));
    CHECK(test::max_error(std::span<const float>(out.data() + 48, 48),
                          std::span<const float>(want.data() + (t - prompt) * 48, 48)) <= 1.0);
  }
  CHECK(test::max_error(got, want) <= 1.0);
  CHECK(a->position() == total);
  // A single step through the session itself.
  auto s = engine.new_session();
  REQUIRE(s.ok());
  std::vector<float> one(48);
  REQUIRE(s->step(attn::ConstTensorView(x.data(), Shape{1, 20}),
                  attn::TensorView(one.data(), Shape{1, 48}))
              .ok());
  CHECK(test::max_error(std::span<const float>(one), std::span<const float>(want.data(), 48)) <=
        1.0);
}

TEST_CASE("output on rank 0 only", "[mpi]") {
  const Case c = make(Variant::kMultiHeadAttention, 0, true);
  const Tensor x(Shape{1, 9, 20}, test::random_floats(9 * 20, 5));
  const std::vector<float> want = single_forward(c, x);
  auto engine = make_dist(c, /*all=*/false);
  std::vector<float> got(want.size(), 7.0f);
  REQUIRE(engine.forward(x.view(), attn::TensorView(got.data(), Shape{1, 9, 48})).ok());
  if (engine.rank() == 0) {
    CHECK(test::max_error(got, want) <= 1.0);
  } else {
    CHECK(got == std::vector<float>(want.size(), 7.0f));
  }
}

TEST_CASE("errors are the same on every rank, and nothing hangs", "[mpi][errors]") {
  // Heads that do not divide by the ranks: every rank refuses, naming the values.
  Case c = make(Variant::kMultiHeadAttention, 0, true);
  c.config.num_heads = g_size == 3 ? 4 : 3;
  c.config.d_out = c.config.num_heads * 4;
  auto w = attn::init_weights_like_torch(c.config, 1);
  REQUIRE(w.ok());
  auto e =
      attn::dist::DistributedEngine::create(attn::dist::Communicator::world(), c.config, w.value());
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.status().message(),
             Catch::Contains("is not divisible by the " + std::to_string(g_size) + " ranks"));
  // A wrong shape given on one rank only fails the call on every rank (no rank waits forever).
  const Case ok = make(Variant::kMultiHeadAttention, 0, true);
  auto engine = make_dist(ok);
  const Tensor x(Shape{1, 5, 20}, test::random_floats(5 * 20, 6));
  std::vector<float> y(5 * 48);
  const Shape out_shape = engine.rank() == g_size - 1 ? Shape{1, 5, 47} : Shape{1, 5, 48};
  const attn::Status s = engine.forward(x.view(), attn::TensorView(y.data(), out_shape));
  CHECK(s.code() == attn::ErrorCode::kInvalidArgument);
  CHECK_THAT(s.message(), Catch::Contains("[1, 5, 47]"));
  // The engine still works afterwards.
  CHECK(engine.forward(x.view(), attn::TensorView(y.data(), Shape{1, 5, 48})).ok());
}

int main(int argc, char** argv) {
  auto runtime = attn::dist::Runtime::init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", runtime.status().to_string().c_str());
    return 1;
  }
  g_size = runtime->size();
  const bool die = argc > 1 && std::strcmp(argv[1], "--die") == 0;
  const bool stuck = argc > 1 && std::strcmp(argv[1], "--stuck") == 0;
  if (die || stuck) {
    // A rank that dies (leaves before the call) or is stuck (never calls): the others must
    // fail, not hang. Rank 0 reports the status it got; a stuck rank 1 waits to be killed.
    const LayerConfig config = LayerConfig::chapter(Variant::kMultiHeadAttention, 20, 48, 12, 64);
    auto w = attn::init_weights_like_torch(config, 42);  // no Catch2 here: plain checks
    if (!w.ok()) return 1;
    attn::dist::Options o;
    o.timeout_seconds = 5;
    auto e = attn::dist::DistributedEngine::create(attn::dist::Communicator::world(), config,
                                                   w.value(), o);
    if (!e.ok()) return 1;
    if (runtime->rank() == 1) {
      if (die) std::_Exit(3);
      std::this_thread::sleep_for(std::chrono::seconds(600));
    }
    const Tensor x(Shape{1, 5, 20}, test::random_floats(5 * 20, 6));
    std::vector<float> y(5 * 48);
    const attn::Status s = e->forward(x.view(), attn::TensorView(y.data(), Shape{1, 5, 48}));
    std::fprintf(stderr, "rank %d: %s\n", runtime->rank(), s.to_string().c_str());
    std::_Exit(s.code() == attn::ErrorCode::kUnavailable ? 2 : 0);
  }
  return Catch::Session().run(argc, argv);
}
