// `attn bench`: throughput sweeps of forward() and of decode steps, through the public API.
// Results go to stdout (table, csv or json); progress and logs go to stderr.
#include <chrono>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"
#include "attn/probe.hpp"
#include "attn/runtime.hpp"
#include "bench_report.hpp"
#include "commands.hpp"

namespace attn::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string preset;
  std::vector<std::int64_t> batch{8}, seq_len{1024}, threads{0}, context{1024, 4096, 16384};
  std::int64_t d_model = 768, heads = 12;
  std::vector<std::string> backend{"tbb"}, impl{"fused"};
  bool causal = true, decode = false;
  int warmup = 1, reps = 5;
  std::string format = "table", isa = "auto";
};

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

Tensor random_tensor(Shape shape, std::uint32_t seed) {
  Tensor t(shape);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : t.values()) v = dist(gen);
  return t;
}

// A GPT-2-style attention layer (qkv_bias, out_proj) of the requested size.
Result<Engine> make_engine(const BenchOptions& o, std::int64_t context, std::int64_t threads, const std::string& backend) {
  LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, o.d_model, o.d_model, o.heads, context);
  c.qkv_bias = true;
  c.mask = o.causal ? Mask::kCausal : Mask::kNone;
  RunOptions run;
  run.threads = static_cast<int>(threads);
  Result<Backend> b = parse_backend(backend);
  if (!b.ok()) return b.status();
  run.backend = *b;
  Result<Isa> isa = parse_isa(o.isa);
  if (!isa.ok()) return isa.status();
  run.isa = *isa;
  Result<Weights> w = init_weights_like_torch(c, 123);
  if (!w.ok()) return w.status();
  return Engine::create(c, w.value(), run);
}

Row describe(const Engine& e, const std::string& impl, const std::string& backend, const RuntimeInfo& info) {
  Row r;
  r.set("impl", impl).set("backend", backend).set("isa", std::string(e.isa()));
  r.set("threads", std::int64_t{e.threads()}).set("d_model", e.config().d_out).set("heads", e.config().num_heads);
  r.set("causal", e.config().causal());
  r.set("commit", info.git_commit).set("cpu_model", info.cpu_model);
  return r;
}

// Moves the machine fields (commit, cpu) to the end so tables stay readable.
Row finish(Row r, const std::string& format) {
  Row out;
  Row tail;
  for (const auto& [name, v] : r.fields()) {
    if (name == "commit" || name == "cpu_model") {
      if (format != "table") tail.set(name, v);
    } else {
      out.set(name, v);
    }
  }
  for (const auto& [name, v] : tail.fields()) out.set(name, v);
  return out;
}

int bench_forward(const BenchOptions& o, const RuntimeInfo& info, double peak) {
  std::int64_t max_seq = 1;
  for (auto s : o.seq_len) max_seq = std::max(max_seq, s);
  const std::size_t n = o.threads.size() * o.backend.size() * o.impl.size() * o.batch.size() * o.seq_len.size();
  std::vector<Row> rows;
  std::size_t i = 0;
  for (auto threads : o.threads) {
    for (const auto& backend : o.backend) {
      Result<Engine> engine = make_engine(o, max_seq, threads, backend);
      if (!engine.ok()) {
        std::cerr << "attn bench: " << engine.status().to_string() << "\n";
        return 1;
      }
      for (const auto& impl_name : o.impl) {
        const AttentionImpl impl = impl_name == "unfused" ? AttentionImpl::kUnfused : AttentionImpl::kFused;
        for (auto batch : o.batch) {
          for (auto seq : o.seq_len) {
            progress(++i, n, impl_name + " " + backend + " threads " + std::to_string(engine->threads()) +
                                 " batch " + std::to_string(batch) + " seq_len " + std::to_string(seq));
            const Tensor x = random_tensor(Shape{batch, seq, o.d_model}, 7);
            Tensor y(Shape{batch, seq, o.d_model});
            std::vector<double> ms;
            for (int r = 0; r < o.warmup + o.reps; ++r) {
              const auto t0 = Clock::now();
              const Status s = engine->forward(x.view(), y.view(), impl);
              if (!s.ok()) {
                std::cerr << "attn bench: " << s.to_string() << "\n";
                return 1;
              }
              if (r >= o.warmup) ms.push_back(ms_since(t0));
            }
            const Timing t = Timing::of(ms);
            const Cost cost = engine->forward_cost(batch, seq);
            const double gflops = cost.flops / (t.median_ms * 1e-3) * 1e-9;
            Row row = describe(engine.value(), impl_name, backend, info);
            row.set("batch", batch).set("seq_len", seq).set("median_ms", t.median_ms).set("min_ms", t.min_ms);
            row.set("max_ms", t.max_ms).set("gflops", gflops);
            row.set("tokens_per_s", static_cast<double>(batch * seq) / (t.median_ms * 1e-3));
            row.set("peak_fraction", gflops / (peak * engine->threads()));
            rows.push_back(finish(row, o.format));
          }
        }
      }
    }
  }
  write_rows(std::cout, o.format, rows);
  return 0;
}

int bench_decode(const BenchOptions& o, const RuntimeInfo& info) {
  const std::size_t n = o.threads.size() * o.backend.size() * o.context.size();
  std::vector<Row> rows;
  std::size_t i = 0;
  for (auto threads : o.threads) {
    for (const auto& backend : o.backend) {
      for (auto context : o.context) {
        const std::int64_t capacity = context + 1 + o.warmup + o.reps;
        Result<Engine> engine = make_engine(o, capacity, threads, backend);
        if (!engine.ok()) {
          std::cerr << "attn bench: " << engine.status().to_string() << "\n";
          return 1;
        }
        progress(++i, n, "decode " + backend + " threads " + std::to_string(engine->threads()) + " context " +
                             std::to_string(context));
        Result<Session> session = engine->new_session();
        if (!session.ok()) {
          std::cerr << "attn bench: " << session.status().to_string() << "\n";
          return 1;
        }
        Tensor prompt = random_tensor(Shape{context, o.d_model}, 3);
        Tensor prompt_out(Shape{context, o.d_model});
        if (Status s = session->prefill(prompt.view(), prompt_out.view()); !s.ok()) {
          std::cerr << "attn bench: " << s.to_string() << "\n";
          return 1;
        }
        const Tensor x = random_tensor(Shape{1, o.d_model}, 5);
        Tensor y(Shape{1, o.d_model});
        std::vector<double> ms, cache_gbs;
        for (int r = 0; r < o.warmup + o.reps; ++r) {
          StepStats stats;
          const auto t0 = Clock::now();
          if (Status s = session->step(x.view(), y.view(), &stats); !s.ok()) {
            std::cerr << "attn bench: " << s.to_string() << "\n";
            return 1;
          }
          if (r < o.warmup) continue;
          ms.push_back(ms_since(t0));
          cache_gbs.push_back(stats.cache_bytes_read / static_cast<double>(stats.attention_ns));
        }
        // The same engine's full forward over context + 1 tokens, for the step/forward ratio.
        const Tensor full = random_tensor(Shape{1, context + 1, o.d_model}, 9);
        Tensor full_out(Shape{1, context + 1, o.d_model});
        const auto t0 = Clock::now();
        if (Status s = engine->forward(full.view(), full_out.view()); !s.ok()) {
          std::cerr << "attn bench: " << s.to_string() << "\n";
          return 1;
        }
        const double forward_ms = ms_since(t0);
        const double bandwidth = measure_read_bandwidth(engine->threads());
        const Timing t = Timing::of(ms);
        const double cache_median = Timing::of(cache_gbs).median_ms;  // median of the GB/s values
        Row row = describe(engine.value(), "decode", backend, info);
        row.set("context", context).set("median_ms", t.median_ms).set("p99_ms", t.p99_ms);
        row.set("min_ms", t.min_ms).set("max_ms", t.max_ms).set("tokens_per_s", 1e3 / t.median_ms);
        row.set("cache_gb_s", cache_median).set("memory_gb_s", bandwidth);
        row.set("bandwidth_fraction", cache_median / bandwidth);
        row.set("forward_ms", forward_ms).set("step_over_forward", t.median_ms / forward_ms);
        rows.push_back(finish(row, o.format));
      }
    }
  }
  write_rows(std::cout, o.format, rows);
  return 0;
}

int run_bench(BenchOptions o) {
  if (o.preset == "gpt2-small") {
    o.batch = {8};
    o.seq_len = {1024};
    o.d_model = 768;
    o.heads = 12;
    o.causal = true;
  }
  const RuntimeInfo info = runtime_info();
  std::cerr << "attn bench: " << info.cpu_model << ", " << info.cpus << " CPUs, kernels "
            << (o.isa == "auto" ? info.default_isa : o.isa) << ", commit " << info.git_commit << "\n";
  if (o.decode) return bench_decode(o, info);
  Result<Isa> isa = parse_isa(o.isa);
  const double peak = measure_peak_gflops(isa.ok() ? *isa : Isa::kAuto);
  return bench_forward(o, info, peak);
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "Measure forward() or decode-step throughput over a sweep of sizes");
  sub->add_option("--preset", o->preset, "gpt2-small: batch 8, seq_len 1024, d 768, 12 heads, causal")
      ->check(CLI::IsMember({"gpt2-small"}));
  sub->add_option("--batch", o->batch, "Batch sizes (comma-separated)")->delimiter(',')->check(CLI::PositiveNumber);
  sub->add_option("--seq-len", o->seq_len, "Sequence lengths")->delimiter(',')->check(CLI::PositiveNumber);
  sub->add_option("--d-model", o->d_model, "Model width (d_in = d_out)")->check(CLI::PositiveNumber);
  sub->add_option("--heads", o->heads, "Attention heads")->check(CLI::PositiveNumber);
  sub->add_option("--threads", o->threads, "Thread counts (0: the CPUs this process may use)")->delimiter(',');
  sub->add_option("--backend", o->backend, "Schedulers: tbb, openmp, serial")
      ->delimiter(',')->check(CLI::IsMember({"tbb", "openmp", "serial"}));
  sub->add_option("--impl", o->impl, "Attention paths: fused (flash), unfused (scores materialised)")
      ->delimiter(',')->check(CLI::IsMember({"fused", "unfused"}));
  sub->add_flag("--causal,!--no-causal", o->causal, "Causal mask (default) or none");
  sub->add_option("--warmup", o->warmup, "Untimed runs before measuring")->check(CLI::NonNegativeNumber);
  sub->add_option("--reps", o->reps, "Timed runs per row (decode: steps)")->check(CLI::PositiveNumber);
  sub->add_option("--format", o->format, "table, csv or json")->check(CLI::IsMember({"table", "csv", "json"}));
  sub->add_option("--isa", o->isa, "Kernels: auto, sse2, avx2, avx512")
      ->check(CLI::IsMember({"auto", "sse2", "avx2", "avx512"}));
  sub->add_flag("--decode", o->decode, "Measure one decode step against a KV cache instead of forward()");
  sub->add_option("--context", o->context, "Decode: cached positions")->delimiter(',')->check(CLI::PositiveNumber);
  return {sub, [o] { return run_bench(*o); }};
}

}  // namespace attn::tools
