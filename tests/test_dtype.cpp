// Engine dtypes (issue 15, weights and compute): RunOptions validation and refusals, the f16 range
// rule, NaN/Inf weights, 16-bit sessions, and the accuracy of bf16/f16 weights against the
// float64 reference on gpt2-small and llama-3.2-1b shapes (bounds at about twice the errors
// measured for docs/precision.md; see the table there).
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/dtype.hpp"
#include "attn/engine.hpp"
#include "attn/probe.hpp"
#include "attn/runtime.hpp"
#include "attn/weights.hpp"
#include "engine_fixture.hpp"
#include "helpers.hpp"
#include "precision_helpers.hpp"

using attn::DType;

namespace {

using test::Errors;
using test::gpt2_like;
using test::llama_like;

// Output of an engine with `weight_dtype` on x [batch, seq, d] against the float64 oracle
// on the f32 weights (so the error includes the rounding of the weights to 16 bits).
Errors measure(const attn::LayerConfig& config, DType weight_dtype, attn::Isa isa,
               std::int64_t batch, std::int64_t seq, std::uint64_t seed,
               DType compute_dtype = DType::kF32) {
  auto w = attn::init_weights_like_torch(config, seed);
  REQUIRE(w.ok());
  attn::Tensor x(
      attn::Shape{batch, seq, config.d_in},
      test::random_floats(static_cast<std::size_t>(batch * seq * config.d_in), seed + 1));
  attn::RunOptions o;
  o.weight_dtype = weight_dtype;
  o.compute_dtype = compute_dtype;
  o.isa = isa;
  auto e = attn::Engine::create(config, *w, o);
  REQUIRE(e.ok());
  attn::Tensor y(attn::Shape{batch, seq, config.d_out});
  REQUIRE(e->forward(x.view(), y.view()).ok());
  auto want = attn::reference::forward(config, *w, x.view());
  REQUIRE(want.ok());
  Errors r;
  double peak = 0;
  for (std::size_t i = 0; i < want->values.size(); ++i) {
    r.max_abs = std::max(r.max_abs, std::abs(static_cast<double>(y.data()[i]) - want->values[i]));
    peak = std::max(peak, std::abs(want->values[i]));
  }
  r.max_rel = r.max_abs / peak;
  return r;
}

// x rounded to bfloat16, nearest even (finite x), kept in f32.
float round_bf16(float x) {
  const auto u = std::bit_cast<std::uint32_t>(x);
  return std::bit_cast<float>((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}

}  // namespace

TEST_CASE("dtype names parse and print", "[dtype]") {
  for (DType d : {DType::kF32, DType::kBf16, DType::kF16, DType::kInt8}) {
    auto p = attn::parse_dtype(attn::to_string(d));
    REQUIRE(p.ok());
    CHECK(*p == d);
  }
  auto bad = attn::parse_dtype("fp16");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("'fp16'") != std::string::npos);
  CHECK(attn::dtype_bytes(DType::kBf16) == 2);
}

TEST_CASE("the bf16 peak probe runs only where AVX512-BF16 exists", "[dtype]") {
  const double gflops = attn::measure_peak_bf16_gflops(0.01);
  if (gflops == 0) {
    WARN("no AVX512-BF16 on this CPU (or in this build): the bf16 peak probe returned 0");
  } else {
    CHECK(gflops > 1.0);
  }
}

TEST_CASE("create refuses dtypes it cannot run, naming the setting and value", "[dtype]") {
  test::EngineCase c =
      test::make_case(attn::Variant::kMultiHeadAttention, 16, 16, 2, 1, 4, true, true, 3);
  SECTION("compute_dtype bf16 needs bf16 weights") {
    for (DType w : {DType::kF32, DType::kF16}) {
      attn::RunOptions o;
      o.compute_dtype = DType::kBf16;
      o.weight_dtype = w;
      auto e = attn::Engine::create(c.config, c.weights, o);
      REQUIRE_FALSE(e.ok());
      CHECK(e.status().code() == attn::ErrorCode::kInvalidArgument);
      const std::string msg = e.status().message();
      INFO(msg);
      CHECK(msg.find("compute_dtype = bf16") != std::string::npos);
      CHECK(msg.find(std::string("weight_dtype = ") + attn::to_string(w)) != std::string::npos);
    }
  }
  SECTION("names a setting does not take") {
    attn::RunOptions o;
    o.weight_dtype = DType::kInt8;
    CHECK(attn::validate(o).message().find("weight_dtype = int8") != std::string::npos);
    o = {};
    o.compute_dtype = DType::kF16;
    CHECK(attn::validate(o).message().find("compute_dtype = f16") != std::string::npos);
    o = {};
    o.kv_dtype = static_cast<DType>(42);
    CHECK(attn::validate(o).code() == attn::ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("f16 weights beyond 65504 are refused, Inf and NaN weights behave as in f32", "[dtype]") {
  test::EngineCase c =
      test::make_case(attn::Variant::kMultiHeadAttention, 16, 16, 2, 1, 4, true, true, 5);
  attn::RunOptions o;
  o.weight_dtype = DType::kF16;
  c.weights.w_key.data()[3 * 16 + 5] = 70000.0f;
  auto e = attn::Engine::create(c.config, c.weights, o);
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == attn::ErrorCode::kInvalidArgument);
  CHECK(e.status().message().find("w_key[3, 5] = 70000") != std::string::npos);
  o.weight_dtype = DType::kBf16;  // bf16 has f32's exponent range: accepted
  REQUIRE(attn::Engine::create(c.config, c.weights, o).ok());
  // 65519 rounds to 65504 (accepted); Inf stays Inf: the output matches the f32 engine's
  // NaN/Inf pattern.
  c.weights.w_key.data()[3 * 16 + 5] = 65519.0f;
  c.weights.w_value.data()[7] = INFINITY;
  c.weights.w_out.data()[2] = NAN;
  for (DType d : {DType::kF32, DType::kBf16, DType::kF16}) {
    o.weight_dtype = d;
    auto eng = attn::Engine::create(c.config, c.weights, o);
    REQUIRE(eng.ok());
  }
  attn::RunOptions f32;
  auto e32 = attn::Engine::create(c.config, c.weights, f32);
  REQUIRE(e32.ok());
  attn::Tensor y32(attn::Shape{1, 4, 16});
  REQUIRE(e32->forward(c.x.view(), y32.view()).ok());
  for (DType d : {DType::kBf16, DType::kF16}) {
    o.weight_dtype = d;
    auto eng = attn::Engine::create(c.config, c.weights, o);
    REQUIRE(eng.ok());
    attn::Tensor y(attn::Shape{1, 4, 16});
    REQUIRE(eng->forward(c.x.view(), y.view()).ok());
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      INFO("dtype " << attn::to_string(d) << " element " << i);
      CHECK(std::isnan(y.data()[i]) == std::isnan(y32.data()[i]));
      CHECK(std::isinf(y.data()[i]) == std::isinf(y32.data()[i]));
    }
  }
}

TEST_CASE(
    "16-bit weights halve the packed bytes and keep sessions equal to forward (bf16 compute too)",
    "[dtype]") {
  test::EngineCase c =
      test::make_case(attn::Variant::kMultiHeadAttention, 64, 64, 4, 1, 9, true, true, 11, 16);
  attn::RunOptions o32;
  auto e32 = attn::Engine::create(c.config, c.weights, o32);
  REQUIRE(e32.ok());
  const std::pair<DType, DType> settings[] = {
      {DType::kBf16, DType::kF32}, {DType::kF16, DType::kF32}, {DType::kBf16, DType::kBf16}};
  for (const auto& [d, compute] : settings) {
    attn::RunOptions o;
    o.weight_dtype = d;
    o.compute_dtype = compute;
    auto e = attn::Engine::create(c.config, c.weights, o);
    REQUIRE(e.ok());
    CHECK(e->options().weight_dtype == d);
    CHECK(e->options().compute_dtype == compute);
    const std::size_t bias_bytes = (3 * 64 + 64) * sizeof(float);
    // Packed panels halve (each rounded up to 64 bytes); biases stay f32.
    CHECK(e->weight_bytes() - bias_bytes <= (e32->weight_bytes() - bias_bytes) / 2 + 128);
    attn::Tensor y(attn::Shape{1, 9, 64});
    REQUIRE(e->forward(c.x.view(), y.view()).ok());
    auto s = e->new_session();
    REQUIRE(s.ok());
    attn::Tensor head(attn::Shape{5, 64}, std::vector<float>(c.x.data(), c.x.data() + 5 * 64));
    attn::Tensor out(attn::Shape{5, 64});
    REQUIRE(s->prefill(head.view(), out.view()).ok());
    for (std::int64_t t = 5; t < 9; ++t) {
      attn::Tensor xt(attn::Shape{1, 64},
                      std::vector<float>(c.x.data() + t * 64, c.x.data() + (t + 1) * 64));
      attn::Tensor yt(attn::Shape{1, 64});
      REQUIRE(s->step(xt.view(), yt.view()).ok());
      for (int j = 0; j < 64; ++j) {
        INFO("dtype " << attn::to_string(d) << " compute " << attn::to_string(compute) << " token "
                      << t << " col " << j);
        CHECK(yt.data()[j] == Approx(y.data()[t * 64 + j]).margin(1e-5));
      }
    }
  }
}

TEST_CASE("16-bit weights and bf16 compute give the same bits on every backend and thread count",
          "[dtype]") {
  test::EngineCase c =
      test::make_case(attn::Variant::kMultiHeadAttention, 96, 96, 4, 3, 37, true, true, 17);
  // (weight_dtype, compute_dtype): the 16-bit weights, then compute_dtype bf16.
  const std::pair<DType, DType> settings[] = {
      {DType::kBf16, DType::kF32}, {DType::kF16, DType::kF32}, {DType::kBf16, DType::kBf16}};
  for (const auto& [d, compute] : settings) {
    attn::RunOptions serial;
    serial.backend = attn::Backend::kSerial;
    serial.weight_dtype = d;
    serial.compute_dtype = compute;
    auto e1 = attn::Engine::create(c.config, c.weights, serial);
    REQUIRE(e1.ok());
    attn::Tensor want(attn::Shape{3, 37, 96});
    REQUIRE(e1->forward(c.x.view(), want.view()).ok());
    for (attn::Backend b : test::threaded_backends()) {
      attn::RunOptions o = serial;
      o.backend = b;
      o.threads = 3;
      auto e = attn::Engine::create(c.config, c.weights, o);
      REQUIRE(e.ok());
      attn::Tensor got(attn::Shape{3, 37, 96});
      REQUIRE(e->forward(c.x.view(), got.view()).ok());
      INFO("dtype " << attn::to_string(d) << " compute " << attn::to_string(compute) << " backend "
                    << attn::to_string(b));
      REQUIRE(std::memcmp(got.data(), want.data(), sizeof(float) * 3 * 37 * 96) == 0);
    }
  }
}

// Measured (docs/precision.md; seed 1, avx2 and sse2 agree to 3 digits on 16-bit weights):
// gpt2-small batch 2 x seq 64: max_abs f32 6.8e-7, bf16 2.06e-3, f16 2.44e-4; llama-3.2-1b
// batch 1 x seq 32: f32 4.7e-7, bf16 1.53e-3, f16 1.96e-4. Bounds: about twice those.
TEST_CASE("bf16 and f16 weights: error against the float64 reference is bounded",
          "[dtype][precision]") {
  struct Case {
    const char* name;
    attn::LayerConfig config;
    std::int64_t batch, seq;
    double bound_f32, bound_bf16, bound_f16, bound_bf16_compute;
  };
  const Case cases[] = {
      {"gpt2-small", gpt2_like(64), 2, 64, 1.4e-6, 4.2e-3, 5e-4, 4.4e-3},
      {"llama-3.2-1b", llama_like(32), 1, 32, 1e-6, 3.1e-3, 4e-4, 4.7e-3},
  };
  for (const Case& k : cases) {
    for (const attn::Isa isa : test::supported_isas()) {
      for (DType d : {DType::kF32, DType::kBf16, DType::kF16}) {
        const Errors e = measure(k.config, d, isa, k.batch, k.seq, 1);
        const double bound =
            d == DType::kF32 ? k.bound_f32 : (d == DType::kBf16 ? k.bound_bf16 : k.bound_f16);
        INFO(k.name << " isa " << attn::to_string(isa) << " dtype " << attn::to_string(d)
                    << " max_abs " << e.max_abs << " max_rel " << e.max_rel);
        CHECK(e.max_abs <= bound);
      }
      // compute_dtype bf16: activations rounded to bf16 too (vdpbf16ps where the CPU and isa
      // allow, else f32 FMAs on the rounded operands).
      const Errors e = measure(k.config, DType::kBf16, isa, k.batch, k.seq, 1, DType::kBf16);
      INFO(k.name << " isa " << attn::to_string(isa) << " compute bf16 max_abs " << e.max_abs
                  << " max_rel " << e.max_rel);
      CHECK(e.max_abs <= k.bound_bf16_compute);
    }
  }
}

// Prints the table of docs/precision.md (hidden: run with `attn_tests "[.precision_table]" -s`).
TEST_CASE("precision table", "[.precision_table]") {
  struct Case {
    const char* name;
    attn::LayerConfig config;
    std::int64_t batch, seq;
  };
  const Case cases[] = {
      {"gpt2-small 2x64", gpt2_like(64), 2, 64},
      {"gpt2-small 1x1024", gpt2_like(1024), 1, 1024},
      {"llama-3.2-1b 1x32", llama_like(32), 1, 32},
      {"llama-3.2-1b 1x256", llama_like(256), 1, 256},
  };
  for (const Case& k : cases) {
    for (DType d : {DType::kF32, DType::kBf16, DType::kF16}) {
      for (std::uint64_t seed : {1, 2, 3}) {
        const Errors e = measure(k.config, d, attn::Isa::kAuto, k.batch, k.seq, seed);
        WARN(k.name << " | " << attn::to_string(d) << " | seed " << seed << " | max_abs "
                    << e.max_abs << " | max_rel " << e.max_rel);
      }
    }
    for (std::uint64_t seed : {1, 2, 3}) {
      const Errors e =
          measure(k.config, DType::kBf16, attn::Isa::kAuto, k.batch, k.seq, seed, DType::kBf16);
      WARN(k.name << " | bf16 weights, compute bf16 | seed " << seed << " | max_abs " << e.max_abs
                  << " | max_rel " << e.max_rel);
    }
  }
}

TEST_CASE("compute_dtype bf16 multiplies the activations rounded to bf16", "[dtype]") {
  // A causal layer without out_proj: its only GEMM input is x, so compute bf16 on x is compute
  // f32 (bf16 weights) on x rounded to bf16. Bit for bit where the f32 FMA kernel runs it; to
  // f32 rounding of the sums where vdpbf16ps does (another summation order).
  test::EngineCase c =
      test::make_case(attn::Variant::kCausalAttention, 48, 40, 1, 2, 21, true, true, 23);
  attn::Tensor x_rounded = c.x;
  for (float& v : x_rounded.values()) v = round_bf16(v);
  const attn::RuntimeInfo info = attn::runtime_info();
  for (const attn::Isa isa : test::supported_isas()) {
    attn::RunOptions o;
    o.isa = isa;
    o.weight_dtype = DType::kBf16;
    auto f32 = attn::Engine::create(c.config, c.weights, o);
    o.compute_dtype = DType::kBf16;
    auto bf16 = attn::Engine::create(c.config, c.weights, o);
    REQUIRE(f32.ok());
    REQUIRE(bf16.ok());
    attn::Tensor want(attn::Shape{2, 21, 40}), got(attn::Shape{2, 21, 40}),
        unrounded(attn::Shape{2, 21, 40});
    REQUIRE(f32->forward(x_rounded.view(), want.view()).ok());
    REQUIRE(f32->forward(c.x.view(), unrounded.view()).ok());
    REQUIRE(bf16->forward(c.x.view(), got.view()).ok());
    const bool dot = isa == attn::Isa::kAvx512 && info.bf16_dot;
    INFO("isa " << attn::to_string(isa) << (dot ? " (vdpbf16ps)" : " (f32 FMA)"));
    if (!dot) {
      CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * 2 * 21 * 40) == 0);
    } else {
      for (std::int64_t i = 0; i < got.numel(); ++i)
        REQUIRE(got.data()[i] == Approx(want.data()[i]).margin(1e-5));
    }
    // And the rounding happened: the output differs from the unrounded input's.
    CHECK(std::memcmp(got.data(), unrounded.data(), sizeof(float) * 2 * 21 * 40) != 0);
  }
}
