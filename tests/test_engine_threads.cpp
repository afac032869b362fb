// Determinism across thread counts and backends, concurrent forward() calls, and no heap
// allocation in steady state.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "engine_fixture.hpp"

using attn::Backend;
using attn::LayerConfig;
using attn::Variant;

// ---- allocation counting: the whole test binary's heap allocations go through here -------
// Workspaces come from aligned_alloc and the threading runtimes use malloc, so the C
// allocation functions are interposed (the executable's definitions win over libc's for
// libattn, libtbb and libgomp too), not only operator new.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// Sanitizers replace the allocator themselves; the counting test runs in the plain builds.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ATTN_COUNT_ALLOCATIONS 0
#else
#define ATTN_COUNT_ALLOCATIONS 1
#include <cerrno>

extern "C" {
void* __libc_malloc(std::size_t n);  // glibc's own entry points, called by the interposers
void* __libc_calloc(std::size_t count, std::size_t n);
void* __libc_realloc(void* p, std::size_t n);
void* __libc_memalign(std::size_t align, std::size_t n);
}

namespace {
void count() noexcept {
  if (g_counting.load(std::memory_order_relaxed))
    g_allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) noexcept {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t count_, std::size_t n) noexcept {
  count();
  return __libc_calloc(count_, n);
}
void* realloc(void* p, std::size_t n) noexcept {
  count();
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t align, std::size_t n) noexcept {
  count();
  return __libc_memalign(align, n);
}
void* memalign(std::size_t align, std::size_t n) noexcept {
  count();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) noexcept {
  count();
  if (align % sizeof(void*) != 0 || (align & (align - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}  // extern "C"
#endif

namespace {

std::vector<Backend> threaded_backends() {
  if (test::threaded_backends().empty()) {
    WARN("TSan build: the tbb and openmp backends are not run (their runtimes are uninstrumented)");
  }
  return test::threaded_backends();
}

test::EngineCase gpt2_like_case() {
  // Large enough for several q-blocks and GEMM tiles, small enough to be quick.
  return test::make_case(Variant::kMultiHeadAttention, 96, 96, 4, 3, 300, true, true, 11);
}

attn::Engine make_engine(const test::EngineCase& c, Backend backend, int threads) {
  attn::RunOptions run;
  run.backend = backend;
  run.threads = threads;
  auto e = attn::Engine::create(c.config, c.weights, run);
  REQUIRE(e.ok());
  return e.value();
}

}  // namespace

TEST_CASE("forward gives the same bits for any thread count and backend", "[engine][threads]") {
  const test::EngineCase c = gpt2_like_case();
  const std::vector<float> want = test::run_engine(make_engine(c, Backend::kSerial, 1), c.x);
  REQUIRE(!want.empty());
  std::vector<Backend> backends = threaded_backends();
  backends.push_back(Backend::kSerial);
  for (Backend backend : backends) {
    for (int threads : {1, 2, 3, 8}) {
      CAPTURE(attn::to_string(backend), threads);
      const std::vector<float> got = test::run_engine(make_engine(c, backend, threads), c.x);
      REQUIRE(got.size() == want.size());
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("8 threads x 50 concurrent forward calls on one engine equal the serial results",
          "[engine][threads]") {
  const test::EngineCase big = gpt2_like_case();
  test::EngineCase small = big;  // same weights, another shape
  small.x = attn::Tensor(attn::Shape{1, 37, 96}, test::random_floats(37 * 96, 12));
  std::vector<Backend> backends = threaded_backends();
  backends.push_back(Backend::kSerial);
  for (Backend backend : backends) {
    CAPTURE(attn::to_string(backend));
    attn::RunOptions run;
    run.backend = backend;
    run.threads = 2;
    auto engine = attn::Engine::create(big.config, big.weights, run);
    REQUIRE(engine.ok());
    const std::vector<float> want_big =
        test::run_engine(make_engine(big, Backend::kSerial, 1), big.x);
    const std::vector<float> want_small =
        test::run_engine(make_engine(big, Backend::kSerial, 1), small.x);
    std::atomic<int> mismatches{0}, failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          const bool use_big = (i + t) % 5 == 0;  // mixed shapes share the workspace pool
          const auto& x = use_big ? big.x : small.x;
          const auto got = test::try_run_engine(engine.value(), x);
          if (!got.ok())
            ++failures;
          else if (got.value() != (use_big ? want_big : want_small))
            ++mismatches;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    CHECK(mismatches.load() == 0);
  }
}

// Runs `call` once to warm up (pools and workspaces grow), then `kCalls` more times while
// counting heap allocations of every kind; returns the count.
template <class F>
long allocations_after_warmup(F&& call) {
  REQUIRE(call());
  long total = 0;
  constexpr int kCalls = 4;  // several: a runtime may allocate on the 2nd or 3rd call only
  for (int i = 0; i < kCalls; ++i) {
    g_allocations = 0;
    g_counting = true;
    const bool ok = call();
    g_counting = false;
    REQUIRE(ok);
    total += g_allocations.load();
  }
  return total;
}

TEST_CASE("steady-state forward, prefill and steps allocate nothing on the heap",
          "[engine][alloc]") {
  if (!ATTN_COUNT_ALLOCATIONS) {
    WARN("allocation counting is off under sanitizers (they own the allocator): not run");
    return;
  }
  // The interposers see this binary's own calls too.
  g_allocations = 0;
  g_counting = true;
  void* volatile probe = std::malloc(16);  // volatile: the compiler may not elide the pair
  g_counting = false;
  std::free(probe);
  REQUIRE(g_allocations.load() == 1);

  const test::EngineCase c = gpt2_like_case();
  for (Backend backend : {Backend::kTbb, Backend::kOpenMp, Backend::kSerial}) {
    CAPTURE(attn::to_string(backend));
    attn::Engine engine = make_engine(c, backend, 2);
    attn::Tensor y(attn::Shape{3, 300, 96});
    for (auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
      CAPTURE(impl == attn::AttentionImpl::kFused ? "forward fused" : "forward unfused");
      CHECK(allocations_after_warmup(
                [&] { return engine.forward(c.x.view(), y.view(), impl).ok(); }) == 0);
    }
    auto a = engine.new_session(), b = engine.new_session();
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const attn::Tensor prompt(attn::Shape{40, 96}, test::random_floats(40 * 96, 5));
    attn::Tensor prompt_out(attn::Shape{40, 96});
    INFO("prefill");
    CHECK(allocations_after_warmup([&] {
            a->reset();
            return a->prefill(prompt.view(), prompt_out.view()).ok();
          }) == 0);
    const attn::Tensor x1(attn::Shape{1, 96}, test::random_floats(96, 6)),
        x2(attn::Shape{2, 96}, test::random_floats(192, 7));
    attn::Tensor y1(attn::Shape{1, 96}), y2(attn::Shape{2, 96});
    INFO("step");
    CHECK(allocations_after_warmup([&] { return a->step(x1.view(), y1.view()).ok(); }) == 0);
    INFO("batched step");
    std::vector<attn::Session*> both = {&a.value(), &b.value()};
    CHECK(allocations_after_warmup([&] { return engine.step(both, x2.view(), y2.view()).ok(); }) ==
          0);
  }
}
