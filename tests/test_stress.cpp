// Concurrency stress: one engine used by 8 threads with mixed shapes, sessions stepping on
// many threads, and engines created and destroyed while others run. Every result is
// compared with the single-threaded one. Runs under TSan in CI.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>

#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

constexpr int kThreads = 8;
constexpr int kCallsPerThread = 50;
constexpr std::int64_t kContext = 64;

}  // namespace

TEST_CASE("8 threads x 50 mixed-shape calls on one engine, engines created and destroyed alongside",
          "[stress][threads]") {
  test::EngineCase c = test::make_case(Variant::kMultiHeadAttention, 32, 32, 4, 1, kContext, true,
                                       true, 21, kContext);
  attn::RunOptions shared_options;
  shared_options.backend = test::threaded_backend();
  shared_options.threads = 2;
  auto shared = attn::Engine::create(c.config, c.weights, shared_options);
  attn::RunOptions serial_options;
  serial_options.backend = attn::Backend::kSerial;
  auto serial = attn::Engine::create(c.config, c.weights, serial_options);
  REQUIRE(shared.ok());
  REQUIRE(serial.ok());

  std::atomic<int> mismatches{0}, failures{0}, calls{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 gen(static_cast<std::uint32_t>(t));
      for (int i = 0; i < kCallsPerThread; ++i) {
        const std::int64_t batch = 1 + gen() % 4, seq = 1 + gen() % kContext;
        const Tensor x(Shape{batch, seq, 32}, test::random_floats(batch * seq * 32, gen()));
        const auto impl =
            gen() % 4 == 0 ? attn::AttentionImpl::kUnfused : attn::AttentionImpl::kFused;
        const auto got = test::try_run_engine(shared.value(), x, impl);
        const auto want = test::try_run_engine(serial.value(), x, impl);
        if (!got.ok() || !want.ok())
          ++failures;
        else if (got.value() != want.value())
          ++mismatches;
        ++calls;
      }
    });
  }
  // Meanwhile: engines come and go, each used once, sharing nothing with the others.
  std::thread churn([&] {
    int n = 0;
    while (!done.load() || n < 20) {
      attn::RunOptions options = shared_options;
      options.threads = 1 + n % 3;
      auto e = attn::Engine::create(c.config, c.weights, options);
      if (!e.ok()) {
        ++failures;
        break;
      }
      const Tensor x(Shape{1, 5, 32}, test::random_floats(5 * 32, n));
      const auto got = test::try_run_engine(e.value(), x),
                 want = test::try_run_engine(serial.value(), x);
      if (!got.ok() || !want.ok())
        ++failures;
      else if (got.value() != want.value())
        ++mismatches;
      ++n;
    }
  });
  for (auto& th : threads) th.join();
  done = true;
  churn.join();
  CHECK(calls.load() == kThreads * kCallsPerThread);
  CHECK(failures.load() == 0);
  CHECK(mismatches.load() == 0);
}

TEST_CASE("sessions of one engine step concurrently on 8 threads", "[stress][threads][session]") {
  test::EngineCase c = test::make_case(Variant::kMultiHeadAttention, 32, 32, 4, 1, kContext, true,
                                       true, 22, kContext);
  c.options.backend = test::threaded_backend();
  c.options.threads = 2;
  auto engine = attn::Engine::create(c.config, c.weights);
  REQUIRE(engine.ok());
  // Each thread feeds its own sequence token by token; the last output must equal the full
  // forward's last row.
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::int64_t len = 20 + t * 5;
      const Tensor x(Shape{1, len, 32}, test::random_floats(len * 32, 100 + t));
      const auto full = test::try_run_engine(engine.value(), x);
      auto s = engine->new_session();
      if (!full.ok() || !s.ok()) {
        ++bad;
        return;
      }
      Tensor y(Shape{1, 32});
      for (std::int64_t i = 0; i < len; ++i) {
        const Tensor xi(Shape{1, 32},
                        std::vector<float>(x.data() + i * 32, x.data() + (i + 1) * 32));
        if (!s->step(xi.view(), y.view()).ok()) ++bad;
      }
      const std::vector<float> last(full->end() - 32, full->end());
      if (test::max_error(y.values(), last) > 1.0) ++bad;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad.load() == 0);
}
