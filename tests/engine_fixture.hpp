// Builders shared by the engine and session tests: random configs, weights and inputs.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "attn/runtime.hpp"
#include "helpers.hpp"

namespace test {

/// The instruction sets this machine can run, as the public API names them (the tests cover
/// every one of them).
inline std::vector<attn::Isa> supported_isas() {
  std::vector<attn::Isa> isas;
  for (const attn::Isa isa : {attn::Isa::kSse2, attn::Isa::kAvx2, attn::Isa::kAvx512}) {
    if (attn::resolve_isa(isa).ok()) isas.push_back(isa);
  }
  return isas;
}

/// The threaded backends the tests may use. libtbb and libgomp are not built with
/// ThreadSanitizer, so their internal hand-offs look like races to it: under TSan none are
/// used (the serial backend with many caller threads still exercises the engine's own
/// synchronisation).
inline std::vector<attn::Backend> threaded_backends() {
#if defined(__SANITIZE_THREAD__)
  return {};
#else
  return {attn::Backend::kTbb, attn::Backend::kOpenMp};
#endif
}

/// The backend a multi-threaded test should use: TBB, or serial under TSan.
inline attn::Backend threaded_backend() {
  const auto b = threaded_backends();
  return b.empty() ? attn::Backend::kSerial : b.front();
}

/// A config with random weights drawn the PyTorch way, and a random input.
struct EngineCase {
  attn::LayerConfig config;
  attn::RunOptions options;
  attn::Weights weights;
  attn::Tensor x;
};

inline EngineCase make_case(attn::Variant variant, std::int64_t d_in, std::int64_t d_out,
                            std::int64_t heads, std::int64_t batch, std::int64_t seq_len, bool bias,
                            bool causal, std::uint64_t seed, std::int64_t context_length = 0) {
  EngineCase c;
  c.config = attn::LayerConfig::chapter(variant, d_in, d_out, heads,
                                        context_length > 0 ? context_length : seq_len);
  c.config.qkv_bias = bias;
  c.config.mask = causal ? attn::Mask::kCausal : attn::Mask::kNone;
  auto w = attn::init_weights_like_torch(c.config, seed);
  INFO("init_weights_like_torch: " << (w.ok() ? std::string("ok") : w.status().to_string()));
  REQUIRE(w.ok());
  c.weights = std::move(w.value());
  c.x = attn::Tensor(attn::Shape{batch, seq_len, d_in},
                     random_floats(batch * seq_len * d_in, seed + 1));
  return c;
}

/// Runs the engine; returns its output, or the error. Thread-safe (no Catch2 assertion):
/// for worker threads, which count failures and let the main thread CHECK the count.
inline attn::Result<std::vector<float>> try_run_engine(
    const attn::Engine& engine, const attn::Tensor& x,
    attn::AttentionImpl impl = attn::AttentionImpl::kFused) {
  const attn::Shape& s = x.shape();
  attn::Tensor y(s.rank() == 3 ? attn::Shape{s[0], s[1], engine.config().d_out}
                               : attn::Shape{s[0], engine.config().d_out});
  const attn::Status st = engine.forward(x.view(), y.view(), impl);
  if (!st.ok()) return st;
  return std::move(y.values());
}

/// Runs the engine and returns its output; fails the test (REQUIRE, naming the error) when
/// the engine does. Main test thread only: Catch2 assertions are not thread-safe.
inline std::vector<float> run_engine(const attn::Engine& engine, const attn::Tensor& x,
                                     attn::AttentionImpl impl = attn::AttentionImpl::kFused) {
  attn::Result<std::vector<float>> y = try_run_engine(engine, x, impl);
  INFO("forward of " << x.shape().to_string() << ": "
                     << (y.ok() ? std::string("ok") : y.status().to_string()));
  REQUIRE(y.ok());
  return std::move(y.value());
}

/// Runs the float64 reference; fails the test when it does.
inline std::vector<double> run_reference(const EngineCase& c) {
  auto r = attn::reference::forward(c.config, c.weights, c.x.view());
  INFO("reference forward: " << (r.ok() ? std::string("ok") : r.status().to_string()));
  REQUIRE(r.ok());
  return r->values;
}

}  // namespace test
