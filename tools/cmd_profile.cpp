// `attn profile`: runs forward() in a steady loop for perf to sample.
// All set-up (weights, engine, inputs, the first call that sizes the workspace) happens
// before the loop, so a profile shows the kernels, not the preparation.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"
#include "cli_flags.hpp"
#include "commands.hpp"
#include "engine_workload.hpp"

namespace attn::tools {
namespace {

struct ProfileOptions {
  std::string preset = "gpt2-small";
  double seconds = 10;
  RunFlags run;
  DTypeFlags dtypes;
  std::string impl = "fused";
};

int fail(const Status& s) {
  std::cerr << "attn profile: " << s.to_string() << "\n";
  return 1;
}

int run_profile(const ProfileOptions& o) {
  const bench::Workload w =
      *bench::preset(o.preset);  // the flag's validator admits only known presets
  LayerConfig c = bench::layer_config(w, w.seq_len);
  RunOptions run;
  if (Status s = o.run.apply(run); !s.ok()) return fail(s);
  o.dtypes.apply(run);
  Result<Engine> engine = bench::make_engine(c, run);
  if (!engine.ok()) return fail(engine.status());
  Result<Tensor> x = bench::random_tensor(Shape{w.batch, w.seq_len, c.d_in}, 1);
  if (!x.ok()) return fail(x.status());
  Result<Tensor> y = Tensor::zeros(Shape{w.batch, w.seq_len, c.d_out});
  if (!y.ok()) return fail(y.status());
  const AttentionImpl impl = o.impl == "unfused" ? AttentionImpl::kUnfused : AttentionImpl::kFused;
  // The first call sizes the engine's workspace; the loop below then allocates nothing.
  if (Status s = engine->forward(x->view(), y->view(), impl); !s.ok()) return fail(s);
  std::cerr << "attn profile: " << o.preset << " forward, batch " << w.batch << " x " << w.seq_len
            << " tokens, d_model " << w.d_model << ", " << w.num_heads << " heads, kernels "
            << engine->isa() << ", " << engine->threads() << " threads, weights "
            << to_string(run.weight_dtype) << ", for " << o.seconds << " s\n";

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(o.seconds);
  long calls = 0;
  while (Clock::now() < deadline) {
    if (Status s = engine->forward(x->view(), y->view(), impl); !s.ok()) return fail(s);
    ++calls;
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cerr << "attn profile: " << calls << " calls in " << s << " s ("
            << s / static_cast<double>(calls) * 1e3 << " ms per call)\n";
  return 0;
}

}  // namespace

Command add_profile(CLI::App& app) {
  auto o = std::make_shared<ProfileOptions>();
  CLI::App* sub = app.add_subcommand(
      "profile",
      "Run forward() in a steady loop for a profiler: perf record -g -- attn profile ...");
  sub->add_option("--preset", o->preset,
                  "Workload: gpt2-small (batch 8 x 1024 tokens, d_model 768, 12 heads), "
                  "llama-3.2-1b, qwen2-0.5b or mistral-7b (see attn bench --help)")
      ->check(CLI::IsMember(bench::preset_names()))
      ->capture_default_str();
  sub->add_option("--seconds", o->seconds, "How long to loop")->check(finite_in_range(1e-3, 1e6));
  o->run.add_to(sub, /*sweep=*/false);
  o->dtypes.add_to(sub, /*sweep=*/false);
  sub->add_option("--impl", o->impl, "fused or unfused")
      ->check(CLI::IsMember({"fused", "unfused"}));
  return {sub, [o] { return run_profile(*o); }};
}

}  // namespace attn::tools
