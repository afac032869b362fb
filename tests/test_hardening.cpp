// Hostile sizes at the API (issue 13): allocation failures become a Status, never an
// exception; position arithmetic cannot overflow; thread requests beyond the CPUs are clamped
// and reported as the count that runs, with nothing printed.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <limits>

#include "attn/runtime.hpp"
#include "engine_fixture.hpp"

using attn::LayerConfig;
using attn::Shape;
using attn::Tensor;
using attn::Variant;

namespace {

// Under AddressSanitizer or ThreadSanitizer a throwing operator new whose size is too big
// aborts the process (even with allocator_may_return_null=1) instead of throwing
// std::bad_alloc, so the paths that turn bad_alloc into a Status cannot be exercised there;
// the release suite runs them.
bool sanitizer_aborts_on_huge_new() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

}  // namespace

TEST_CASE("init_weights_like_torch returns an error naming the bytes when the weights do not fit",
          "[hardening][limits]") {
  if (sanitizer_aborts_on_huge_new()) {
    WARN("sanitizer build: a too-big operator new aborts instead of throwing; not run");
    return;
  }
  // d = 2^20 passes validate(); its four d x d matrices are 16 TiB, more than any machine
  // here has, so the allocation fails at once (nothing is touched).
  const std::int64_t d = std::int64_t{1} << 20;
  const LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, d, d, 1, 16);
  REQUIRE(attn::validate(c).ok());
  attn::Result<attn::Weights> w = attn::Result<attn::Weights>(attn::Status());
  REQUIRE_NOTHROW(w = attn::init_weights_like_torch(c, 123));
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().code() == attn::ErrorCode::kResourceExhausted);
  CHECK_THAT(w.status().message(),
             Catch::Contains("d_in 1048576") && Catch::Contains("17592186044416 bytes"));
}

TEST_CASE("Tensor::zeros reports an allocation failure or a bad shape as a Status",
          "[hardening][limits]") {
  CHECK(Tensor::zeros(Shape{-1, 3}).status().code() == attn::ErrorCode::kInvalidArgument);
  if (sanitizer_aborts_on_huge_new()) {
    WARN("sanitizer build: a too-big operator new aborts instead of throwing; not run");
    return;
  }
  attn::Result<Tensor> huge = attn::Result<Tensor>(attn::Status());
  REQUIRE_NOTHROW(huge = Tensor::zeros(Shape{std::int64_t{1} << 42, 1024}));
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.status().code() == attn::ErrorCode::kResourceExhausted);
  CHECK_THAT(huge.status().message(), Catch::Contains("18014398509481984 bytes"));
  CHECK(Tensor::zeros(Shape{-1, 3}).status().code() == attn::ErrorCode::kInvalidArgument);
  attn::Result<Tensor> small = Tensor::zeros(Shape{2, 3});
  REQUIRE(small.ok());
  CHECK(small->numel() == 6);
}

TEST_CASE("prefill with a view claiming INT64_MAX rows is out of range, not an overflow",
          "[hardening][session]") {
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 8, 8, 2, 1, 4, false, true, 3, 16);
  auto e = attn::Engine::create(c.config, c.weights);
  REQUIRE(e.ok());
  auto s = e->new_session();
  REQUIRE(s.ok());
  Tensor x1(Shape{1, 8}), y1(Shape{1, 8});
  REQUIRE(s->prefill(x1.view(), y1.view()).ok());  // position 1: 1 + INT64_MAX overflows
  const float dummy[8] = {};
  float out[8] = {};
  const std::int64_t rows = std::numeric_limits<std::int64_t>::max();
  const attn::Status st = s->prefill(attn::ConstTensorView(dummy, Shape{rows, 8}),
                                     attn::TensorView{out, Shape{rows, 8}});
  CHECK(st.code() == attn::ErrorCode::kOutOfRange);
  CHECK_THAT(st.message(), Catch::Contains("exceeds context_length = 16"));
  CHECK(s->position() == 1);
}

namespace {

// Captures what the process writes to file descriptor 2 while `f` runs (TBB writes its
// warnings there directly).
template <class F>
std::string stderr_of(F&& f) {
  std::fflush(stderr);
  char path[] = "/tmp/attn_stderr_XXXXXX";
  const int tmp = mkstemp(path);
  REQUIRE(tmp >= 0);
  const int saved = dup(2);
  dup2(tmp, 2);
  f();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string text;
  lseek(tmp, 0, SEEK_SET);
  char buf[4096];
  for (ssize_t n; (n = read(tmp, buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  close(tmp);
  unlink(path);
  return text;
}

}  // namespace

TEST_CASE("more threads than CPUs: clamped to the CPUs available, reported, nothing printed",
          "[hardening][threads]") {
  const int cpus = attn::runtime_info().cpus;
  test::EngineCase c =
      test::make_case(Variant::kMultiHeadAttention, 32, 32, 4, 2, 64, true, true, 9);
  if (test::threaded_backends().empty())
    WARN("TSan build: the tbb and openmp backends are not run");
  for (attn::Backend backend : test::threaded_backends()) {
    CAPTURE(attn::to_string(backend));
    for (int requested : {1, cpus, cpus + 1, 8, 64}) {
      CAPTURE(requested);
      c.options.backend = backend;
      c.options.threads = requested;
      std::vector<float> y;
      int threads = 0;
      const std::string err = stderr_of([&] {
        auto e = attn::Engine::create(c.config, c.weights, c.options);
        REQUIRE(e.ok());
        threads = e->threads();
        y = test::run_engine(e.value(), c.x);
      });
      CHECK(threads == std::min(requested, cpus));
      CHECK(err.empty());
    }
  }
}
