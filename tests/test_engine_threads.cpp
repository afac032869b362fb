// Determinism across thread counts and backends, concurrent forward() calls, and no heap
// allocation in steady state.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <thread>

#include "engine_fixture.hpp"

using attn::Backend;
using attn::LayerConfig;
using attn::Variant;

// ---- allocation counting: the whole test binary's operator new goes through here --------
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// Sanitizers replace the allocator themselves; the counting test runs in the plain builds.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ATTN_COUNT_ALLOCATIONS 0
#else
#define ATTN_COUNT_ALLOCATIONS 1
// Every replaceable form, so that allocation and release always pair.
namespace {
void* counted_alloc(std::size_t n, std::size_t align = 0) noexcept {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  if (align <= alignof(std::max_align_t)) return std::malloc(n);
  return std::aligned_alloc(align, (n + align - 1) / align * align);
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_alloc(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
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

TEST_CASE("8 threads x 50 concurrent forward calls on one engine equal the serial results", "[engine][threads]") {
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
    const std::vector<float> want_big = test::run_engine(make_engine(big, Backend::kSerial, 1), big.x);
    const std::vector<float> want_small = test::run_engine(make_engine(big, Backend::kSerial, 1), small.x);
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          const bool use_big = (i + t) % 5 == 0;  // mixed shapes share the workspace pool
          const auto& x = use_big ? big.x : small.x;
          if (test::run_engine(engine.value(), x) != (use_big ? want_big : want_small)) ++mismatches;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(mismatches.load() == 0);
  }
}

TEST_CASE("steady-state forward allocates nothing on the heap", "[engine][alloc]") {
  if (!ATTN_COUNT_ALLOCATIONS) {
    WARN("allocation counting is off under sanitizers (they own operator new): not run");
    return;
  }
  const test::EngineCase c = gpt2_like_case();
  for (Backend backend : {Backend::kTbb, Backend::kOpenMp, Backend::kSerial}) {
    for (auto impl : {attn::AttentionImpl::kFused}) {
      CAPTURE(attn::to_string(backend));
      attn::Engine engine = make_engine(c, backend, 2);
      attn::Tensor y(attn::Shape{3, 300, 96});
      REQUIRE(engine.forward(c.x.view(), y.view(), impl).ok());  // warm-up: the pool grows once
      g_allocations = 0;
      g_counting = true;
      const attn::Status s = engine.forward(c.x.view(), y.view(), impl);
      g_counting = false;
      REQUIRE(s.ok());
      CHECK(g_allocations.load() == 0);
    }
  }
}
