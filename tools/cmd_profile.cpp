// `attn profile`: runs forward() in a steady loop for perf to sample.
// All set-up (weights, engine, inputs, the first call that sizes the workspace) happens
// before the loop, so a profile shows the kernels, not the preparation.
#include <chrono>
#include <iostream>
#include <memory>
#include <random>
#include <string>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"
#include "commands.hpp"

namespace attn::tools {
namespace {

struct ProfileOptions {
  std::string preset = "gpt2-small";
  double seconds = 10;
  int threads = 0;
  std::string backend = "tbb", impl = "fused", isa = "auto";
};

int run_profile(const ProfileOptions& o) {
  LayerConfig c = LayerConfig::gpt2_small();
  const std::int64_t batch = 8, seq = 1024;
  RunOptions run;
  run.threads = o.threads;
  auto backend = parse_backend(o.backend);
  auto isa = parse_isa(o.isa);
  if (!backend.ok() || !isa.ok()) {
    std::cerr << "attn profile: " << (backend.ok() ? isa.status() : backend.status()).to_string() << "\n";
    return 2;
  }
  run.backend = *backend;
  run.isa = *isa;
  Result<Weights> w = init_weights_like_torch(c, 123);
  Result<Engine> engine = w.ok() ? Engine::create(c, w.value(), run) : Result<Engine>(w.status());
  if (!engine.ok()) {
    std::cerr << "attn profile: " << engine.status().to_string() << "\n";
    return 1;
  }
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  Tensor x(Shape{batch, seq, c.d_in});
  for (float& v : x.values()) v = dist(gen);
  Tensor y(Shape{batch, seq, c.d_out});
  const AttentionImpl impl = o.impl == "unfused" ? AttentionImpl::kUnfused : AttentionImpl::kFused;
  // The first call sizes the engine's workspace; the loop below then allocates nothing.
  if (Status s = engine->forward(x.view(), y.view(), impl); !s.ok()) {
    std::cerr << "attn profile: " << s.to_string() << "\n";
    return 1;
  }
  std::cerr << "attn profile: forward, batch 8 x 1024 tokens, d 768, 12 heads, kernels " << engine->isa() << ", " << engine->threads() << " threads, for " << o.seconds << " s\n";

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(o.seconds);
  long calls = 0;
  while (Clock::now() < deadline) {
    if (!engine->forward(x.view(), y.view(), impl).ok()) break;
    ++calls;
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cerr << "attn profile: " << calls << " calls in " << s << " s (" << s / static_cast<double>(calls) * 1e3
            << " ms per call)\n";
  return 0;
}

}  // namespace

Command add_profile(CLI::App& app) {
  auto o = std::make_shared<ProfileOptions>();
  CLI::App* sub = app.add_subcommand(
      "profile", "Run forward() in a steady loop for a profiler: perf record -g -- attn profile ...");
  sub->add_option("--preset", o->preset, "Workload: gpt2-small (batch 8 x 1024 tokens, d 768, 12 heads)")
      ->check(CLI::IsMember({"gpt2-small"}));
  sub->add_option("--seconds", o->seconds, "How long to loop")->check(CLI::PositiveNumber);
  sub->add_option("--threads", o->threads, "Worker threads (0: the CPUs this process may use)");
  sub->add_option("--backend", o->backend, "tbb, openmp or serial")->check(CLI::IsMember({"tbb", "openmp", "serial"}));
  sub->add_option("--impl", o->impl, "fused or unfused")->check(CLI::IsMember({"fused", "unfused"}));
  sub->add_option("--isa", o->isa, "auto, sse2, avx2 or avx512")->check(CLI::IsMember({"auto", "sse2", "avx2", "avx512"}));
  return {sub, [o] { return run_profile(*o); }};
}

}  // namespace attn::tools
