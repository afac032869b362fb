// `attn bench`: throughput sweeps of forward() and of decode steps, through the public API.
// Results go to stdout (table, csv or json); progress and logs go to stderr.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"
#if ATTN_HAVE_MPI
#include "attn/distributed.hpp"
#endif
#include "attn/probe.hpp"
#include "attn/runtime.hpp"
#include "bench_report.hpp"
#include "cli_flags.hpp"
#include "commands.hpp"
#include "engine_workload.hpp"
#include "serve_sim.hpp"

namespace attn::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string preset;
  bench::Workload layer;
  std::vector<std::int64_t> batch{8}, seq_len{1024}, kv_len{1024, 4096, 16384};
  RunFlags run;
  DTypeFlags dtypes;
  std::vector<std::string> impl{"fused"};
  bool decode = false;
  bool distributed = false;
  int warmup = 1, reps = 5;
  std::string format = "table";
  LayerShapeFlags shape;
  bool serve_sim = false;
  ServeSimOptions sim;
  std::string prompt_len = "128:2048";
  // Flags given on the command line win over the preset's values.
  CLI::Option *batch_opt = nullptr, *seq_len_opt = nullptr, *d_model_opt = nullptr,
              *heads_opt = nullptr, *causal_opt = nullptr;
};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int fail(const Status& s) {
  std::cerr << "attn bench: " << s.to_string() << "\n";
  return 1;
}

// The FMA peak of one core, probed briefly before the sweep and again after every row, the
// best kept: contention can only lower a probe, so a probe taken in a busy moment cannot
// inflate every peak_fraction as one long probe before the sweep did.
class PeakProbe {
 public:
  explicit PeakProbe(Isa isa) : isa_(isa) {
    for (int i = 0; i < 3; ++i) probe();
  }
  void probe() {
    probes_.push_back(measure_peak_gflops(isa_, kProbeSeconds));
    best_ = std::max(best_, probes_.back());
  }
  double best() const { return best_; }
  /// Returns e.g. "12 probes of 0.03 s: 61.2 to 94.9 GFLOP/s, best kept".
  std::string summary() const {
    const auto [lo, hi] = std::minmax_element(probes_.begin(), probes_.end());
    char buf[128];
    std::snprintf(buf, sizeof buf, "%zu probes of %.2g s: %.1f to %.1f GFLOP/s, best kept",
                  probes_.size(), kProbeSeconds, *lo, *hi);
    return buf;
  }

 private:
  static constexpr double kProbeSeconds = 0.03;  // long enough for ~100 timed FMA loops
  Isa isa_;
  double best_ = 0;
  std::vector<double> probes_;
};

Result<Engine> make_engine(const BenchOptions& o, std::int64_t context_length, std::int64_t threads,
                           const std::string& backend, const DTypeFlags::Combo& dtypes) {
  RunOptions run;
  if (Status s = o.run.apply(run, threads, backend); !s.ok()) return s;
  dtypes.apply(run);
  return bench::make_engine(bench::layer_config(o.layer, context_length), run);
}

// Every (backend, dtypes) pair of the sweep, backend slowest.
std::vector<std::pair<std::string, DTypeFlags::Combo>> backend_dtypes(const BenchOptions& o) {
  std::vector<std::pair<std::string, DTypeFlags::Combo>> out;
  for (const std::string& b : o.run.backends) {
    for (const DTypeFlags::Combo& d : o.dtypes.combos()) out.emplace_back(b, d);
  }
  return out;
}

// The layer's fields beyond d_model and num_heads, in every row.
void add_shape(Row& r, const LayerConfig& c) {
  r.set("num_kv_heads", c.kv_heads()).set("head_dim", c.resolved_head_dim());
  r.set("qkv_bias", c.qkv_bias).set("causal", c.causal());
  r.set("rope", std::string(to_string(c.rope)))
      .set("rope_theta", c.rope_theta)
      .set("rope_dim", c.resolved_rope_dim());
  r.set("window", c.window);
  r.set("alibi", c.alibi).set("softcap", c.softcap);
}

Row describe(const Engine& e, const std::string& impl, const std::string& backend,
             const RuntimeInfo& info) {
  Row r;
  r.set("impl", impl).set("backend", backend).set("isa", std::string(e.isa()));
  r.set("weight_dtype", std::string(to_string(e.options().weight_dtype)))
      .set("compute_dtype", std::string(to_string(e.options().compute_dtype)))
      .set("kv_dtype", std::string(to_string(e.options().kv_dtype)));
  // The count that runs: requests above the CPUs available are clamped by the engine.
  r.set("threads", std::int64_t{e.threads()})
      .set("d_model", e.config().d_out)
      .set("num_heads", e.config().num_heads);
  add_shape(r, e.config());
  r.set("commit", info.git_commit).set("cpu_model", info.cpu_model);
  return r;
}

// Moves the dtype fields, then the machine fields (commit, cpu), to the end: the columns
// before them keep the positions scripts read them at, and tables stay readable.
Row finish(Row r, const std::string& format) {
  Row out;
  Row dtypes;
  Row tail;
  for (const auto& [name, v] : r.fields()) {
    if (name == "commit" || name == "cpu_model") {
      if (format != "table") tail.set(name, v);
    } else if (name == "weight_dtype" || name == "compute_dtype" || name == "kv_dtype") {
      dtypes.set(name, v);
    } else {
      out.set(name, v);
    }
  }
  for (const auto& [name, v] : dtypes.fields()) out.set(name, v);
  for (const auto& [name, v] : tail.fields()) out.set(name, v);
  return out;
}

int bench_forward(const BenchOptions& o, const RuntimeInfo& info, PeakProbe& peak) {
  std::int64_t max_seq = 1;
  for (auto s : o.seq_len) max_seq = std::max(max_seq, s);
  const std::size_t n = o.run.threads.size() * o.run.backends.size() * o.dtypes.combos().size() *
                        o.impl.size() * o.batch.size() * o.seq_len.size();
  struct Measured {
    Row row;
    double gflops;
    int threads;
  };
  std::vector<Measured> measured;
  std::size_t i = 0;
  for (auto threads : o.run.threads) {
    for (const auto& [backend, dtypes] : backend_dtypes(o)) {
      Result<Engine> engine = make_engine(o, max_seq, threads, backend, dtypes);
      if (!engine.ok()) return fail(engine.status());
      for (const auto& impl_name : o.impl) {
        const AttentionImpl impl =
            impl_name == "unfused" ? AttentionImpl::kUnfused : AttentionImpl::kFused;
        for (auto batch : o.batch) {
          for (auto seq : o.seq_len) {
            progress(++i, n,
                     impl_name + " " + backend + " threads " + std::to_string(engine->threads()) +
                         " batch " + std::to_string(batch) + " seq_len " + std::to_string(seq));
            Result<Tensor> x = bench::random_tensor(Shape{batch, seq, o.layer.d_model}, 7);
            if (!x.ok()) return fail(x.status());
            Result<Tensor> y = Tensor::zeros(Shape{batch, seq, o.layer.d_model});
            if (!y.ok()) return fail(y.status());
            std::vector<double> ms;
            for (int r = 0; r < o.warmup + o.reps; ++r) {
              const auto t0 = Clock::now();
              if (Status s = engine->forward(x->view(), y->view(), impl); !s.ok()) return fail(s);
              if (r >= o.warmup) ms.push_back(ms_since(t0));
            }
            peak.probe();
            const Timing t = Timing::of(ms);
            const double gflops =
                bench::forward_gflops(engine.value(), batch, seq, t.median_ms * 1e-3);
            Row row = describe(engine.value(), impl_name, backend, info);
            row.set("batch", batch)
                .set("seq_len", seq)
                .set("median_ms", t.median_ms)
                .set("min_ms", t.min_ms);
            row.set("max_ms", t.max_ms).set("gflops", gflops);
            row.set("tokens_per_s", static_cast<double>(batch * seq) / (t.median_ms * 1e-3));
            measured.push_back({row, gflops, engine->threads()});
          }
        }
      }
    }
  }
  // Every row is divided by the same peak: the best of all the probes of the run.
  std::cerr << "attn bench: single-core FMA peak: " << peak.summary() << "\n";
  std::vector<Row> rows;
  for (Measured& m : measured) {
    m.row.set("peak_gflops", peak.best())
        .set("peak_fraction", m.gflops / (peak.best() * m.threads));
    rows.push_back(finish(m.row, o.format));
  }
  write_rows(std::cout, o.format, rows);
  return 0;
}

// Bytes of the last-level cache (sysconf), or 32 MiB when the system does not say.
std::int64_t llc_bytes() {
  for (int name : {_SC_LEVEL4_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
    const long v = sysconf(name);
    if (v > 0) return v;
  }
  return std::int64_t{32} << 20;
}

// Decode rows: one step of batch 1 against kv_len cached positions, twice. Warm: the same
// session every step, so its keys and values may sit in cache. Cold: steps rotate over
// enough sessions that the keys and values read between two visits of one session exceed
// the last-level cache, the case a server with many sequences sees; only the cold rate is
// compared with the DRAM probe.
int bench_decode(const BenchOptions& o, const RuntimeInfo& info) {
  const std::size_t n =
      o.run.threads.size() * o.run.backends.size() * o.dtypes.combos().size() * o.kv_len.size();
  struct Measured {
    Row row;
    double cold_gb_s;
    int threads;
  };
  std::vector<Measured> measured;
  // The DRAM probe per thread count, best of one run per row: like the FMA peak, a probe in
  // a busy moment is low and would inflate bandwidth_fraction_cold.
  std::map<int, double> memory_gb_s;
  std::size_t i = 0;
  constexpr std::int64_t kMaxColdSessions = 256;
  for (auto threads : o.run.threads) {
    for (const auto& [backend, dtypes] : backend_dtypes(o)) {
      for (auto kv_len : o.kv_len) {
        const std::int64_t cache_bytes = 2 * kv_len * bench::layer_config(o.layer, 1).kv_dim() *
                                         static_cast<std::int64_t>(sizeof(float));
        const std::int64_t sessions =
            std::min(kMaxColdSessions, llc_bytes() / std::max<std::int64_t>(cache_bytes, 1) + 2);
        const int cold_steps = static_cast<int>(std::max<std::int64_t>(o.reps, sessions));
        const std::int64_t capacity = kv_len + 1 + o.warmup + o.reps + cold_steps;
        Result<Engine> engine = make_engine(o, capacity, threads, backend, dtypes);
        if (!engine.ok()) return fail(engine.status());
        progress(++i, n,
                 "decode " + backend + " threads " + std::to_string(engine->threads()) +
                     " kv_len " + std::to_string(kv_len) + " (" + std::to_string(sessions) +
                     " sessions)");
        Result<Tensor> prompt = bench::random_tensor(Shape{kv_len, o.layer.d_model}, 3);
        if (!prompt.ok()) return fail(prompt.status());
        Result<Tensor> prompt_out = Tensor::zeros(Shape{kv_len, o.layer.d_model});
        if (!prompt_out.ok()) return fail(prompt_out.status());
        std::vector<Session> pool;
        for (std::int64_t s = 0; s < sessions; ++s) {
          Result<Session> session = engine->new_session();
          if (!session.ok()) return fail(session.status());
          if (Status st = session->prefill(prompt->view(), prompt_out->view()); !st.ok())
            return fail(st);
          pool.push_back(std::move(session.value()));
        }
        Result<Tensor> x = bench::random_tensor(Shape{1, o.layer.d_model}, 5);
        Result<Tensor> y = Tensor::zeros(Shape{1, o.layer.d_model});
        if (!x.ok() || !y.ok()) return fail(x.ok() ? y.status() : x.status());
        std::vector<double> ms, warm_gbs, cold_ms, cold_gbs;
        for (int r = 0; r < cold_steps; ++r) {
          StepStats stats;
          const auto t0 = Clock::now();
          if (Status s =
                  pool[static_cast<std::size_t>(r % sessions)].step(x->view(), y->view(), &stats);
              !s.ok())
            return fail(s);
          cold_ms.push_back(ms_since(t0));
          cold_gbs.push_back(stats.cache_bytes_read / static_cast<double>(stats.attention_ns));
        }
        for (int r = 0; r < o.warmup + o.reps; ++r) {
          StepStats stats;
          const auto t0 = Clock::now();
          if (Status s = pool.front().step(x->view(), y->view(), &stats); !s.ok()) return fail(s);
          if (r < o.warmup) continue;
          ms.push_back(ms_since(t0));
          warm_gbs.push_back(stats.cache_bytes_read / static_cast<double>(stats.attention_ns));
        }
        double& bandwidth = memory_gb_s[engine->threads()];
        bandwidth = std::max(bandwidth, measure_read_bandwidth(engine->threads()));
        const Timing t = Timing::of(ms), cold = Timing::of(cold_ms);
        const double warm_median = Timing::of(warm_gbs).median_ms;  // median of the GB/s values
        const double cold_median = Timing::of(cold_gbs).median_ms;
        Row row = describe(engine.value(), "decode", backend, info);
        row.set("kv_len", kv_len)
            .set("median_ms", t.median_ms)
            .set("min_ms", t.min_ms)
            .set("max_ms", t.max_ms);
        row.set("tokens_per_s", 1e3 / t.median_ms).set("cold_median_ms", cold.median_ms);
        row.set("cold_sessions", sessions)
            .set("cache_gb_s_warm", warm_median)
            .set("cache_gb_s_cold", cold_median);
        measured.push_back({row, cold_median, engine->threads()});
      }
    }
  }
  std::vector<Row> rows;
  for (Measured& m : measured) {
    const double bandwidth = memory_gb_s[m.threads];
    m.row.set("memory_gb_s", bandwidth).set("bandwidth_fraction_cold", m.cold_gb_s / bandwidth);
    rows.push_back(finish(m.row, o.format));
  }
  write_rows(std::cout, o.format, rows);
  return 0;
}

// --serve-sim rows: one simulation per (threads, backend); see serve_sim.hpp. The DRAM probe
// gives decode_bandwidth_fraction: (KV bytes of a steady-state decode call + weight bytes) /
// its median time, over the probe's GB/s.
int bench_serve_sim(BenchOptions o, const RuntimeInfo& info) {
  const auto colon = o.prompt_len.find(':');
  try {
    o.sim.prompt_min = std::stoll(o.prompt_len.substr(0, colon));
    o.sim.prompt_max =
        colon == std::string::npos ? o.sim.prompt_min : std::stoll(o.prompt_len.substr(colon + 1));
  } catch (const std::exception&) {
    return fail(Status(ErrorCode::kInvalidArgument,
                       "--prompt-len: expected MIN:MAX, got '" + o.prompt_len + "'"));
  }
  std::vector<Row> rows;
  for (auto threads : o.run.threads) {
    for (const auto& [backend, dtypes] : backend_dtypes(o)) {
      Result<Engine> engine =
          make_engine(o, o.sim.prompt_max + o.sim.gen_len, threads, backend, dtypes);
      if (!engine.ok()) return fail(engine.status());
      std::cerr << "attn bench: serve-sim " << backend << " threads " << engine->threads() << "\n";
      Result<ServeSimResult> r = run_serve_sim(engine.value(), o.sim);
      if (!r.ok()) return fail(r.status());
      const double bandwidth = measure_read_bandwidth(engine->threads());
      Row row = describe(engine.value(), "serve-sim", backend, info);
      row.set("sequences", o.sim.sequences)
          .set("prompt_min", o.sim.prompt_min)
          .set("prompt_max", o.sim.prompt_max)
          .set("gen_len", o.sim.gen_len);
      row.set("concurrent", o.sim.concurrent > 0 ? o.sim.concurrent : o.sim.sequences)
          .set("max_batch_tokens", o.sim.max_batch_tokens)
          .set("seed", static_cast<std::int64_t>(o.sim.seed));
      row.set("calls", r->calls)
          .set("generated_tokens_per_s", r->generated_tokens_per_s)
          .set("prefill_tokens_per_s", r->prefill_tokens_per_s);
      row.set("call_p50_ms", r->call_p50_ms).set("call_p99_ms", r->call_p99_ms);
      row.set("pool_bytes_peak", static_cast<std::int64_t>(r->pool_bytes_peak))
          .set("live_kv_bytes_peak", static_cast<std::int64_t>(r->live_kv_bytes_peak))
          .set("pool_over_live",
               static_cast<double>(r->pool_bytes_peak) /
                   static_cast<double>(std::max<std::size_t>(r->live_kv_bytes_peak, 1)));
      row.set("decode_calls", r->decode_calls).set("decode_call_p50_ms", r->decode_call_p50_ms);
      const double floor_ms = r->decode_call_bytes / (bandwidth * 1e9) * 1e3;
      row.set("memory_gb_s", bandwidth)
          .set("decode_call_floor_ms", floor_ms)
          .set("decode_call_over_floor", floor_ms > 0 ? r->decode_call_p50_ms / floor_ms : 0.0);
      row.set("weight_bytes", static_cast<std::int64_t>(engine->weight_bytes()))
          .set("rss_peak_bytes", static_cast<std::int64_t>(r->rss_peak_bytes));
      rows.push_back(finish(row, o.format));
    }
  }
  write_rows(std::cout, o.format, rows);
  return 0;
}

#if ATTN_HAVE_MPI
// `mpirun -np P attn bench --distributed`: the layer's heads over P ranks of --threads
// threads each. Rank 0 writes the rows: the time of a call on rank 0 (every call is
// collective, so the ranks run in step), its exchange share, and for decode one step of one
// session after a prefill of kv_len tokens.
int bench_distributed(const BenchOptions& o, const RuntimeInfo& info) {
  Result<dist::Runtime> mpi = dist::Runtime::init(nullptr, nullptr);
  if (!mpi.ok()) return fail(mpi.status());
  const bool root = mpi->rank() == 0;
  std::vector<Row> rows;
  std::int64_t max_len = 1;
  for (auto s : o.decode ? o.kv_len : o.seq_len) max_len = std::max(max_len, s);
  for (auto threads : o.run.threads) {
    for (const auto& [backend, dtypes] : backend_dtypes(o)) {
      dist::Options options;
      if (Status s = o.run.apply(options.run, threads, backend); !s.ok()) return fail(s);
      // Each rank's engine packs its heads' weights in the requested dtypes, as a local one.
      dtypes.apply(options.run);
      const LayerConfig c =
          bench::layer_config(o.layer, max_len + (o.decode ? o.warmup + o.reps : 0));
      Result<Weights> w = init_weights_like_torch(c, 123);
      if (!w.ok()) return fail(w.status());
      Result<dist::DistributedEngine> engine =
          dist::DistributedEngine::create(dist::Communicator::world(), c, w.value(), options);
      if (!engine.ok()) return fail(engine.status());
      Row base;
      base.set("impl", o.decode ? "decode" : "fused")
          .set("backend", backend)
          .set("isa", std::string(engine->local_engine().isa()));
      base.set("weight_dtype", std::string(to_string(options.run.weight_dtype)))
          .set("compute_dtype", std::string(to_string(options.run.compute_dtype)))
          .set("kv_dtype", std::string(to_string(options.run.kv_dtype)));
      base.set("ranks", std::int64_t{mpi->size()})
          .set("threads", std::int64_t{engine->local_engine().threads()});
      base.set("d_model", c.d_out).set("num_heads", c.num_heads);
      add_shape(base, c);
      auto time_calls = [&](auto&& call) -> Result<std::pair<Timing, Timing>> {
        std::vector<double> ms, exchange_ms;
        for (int r = 0; r < o.warmup + o.reps; ++r) {
          const auto t0 = Clock::now();
          if (Status s = call(r); !s.ok()) return s;
          if (r < o.warmup) continue;
          ms.push_back(ms_since(t0));
          exchange_ms.push_back(engine->last_exchange_seconds() * 1e3);
        }
        return std::make_pair(Timing::of(ms), Timing::of(exchange_ms));
      };
      if (!o.decode) {
        for (auto batch : o.batch) {
          for (auto seq : o.seq_len) {
            Result<Tensor> x = bench::random_tensor(Shape{batch, seq, o.layer.d_model}, 7);
            Result<Tensor> y = Tensor::zeros(Shape{batch, seq, o.layer.d_model});
            if (!x.ok() || !y.ok()) return fail(x.ok() ? y.status() : x.status());
            auto t = time_calls([&](int) { return engine->forward(x->view(), y->view()); });
            if (!t.ok()) return fail(t.status());
            const double seconds = t->first.median_ms * 1e-3;
            Row row = base;
            row.set("batch", batch).set("seq_len", seq).set("median_ms", t->first.median_ms);
            row.set("min_ms", t->first.min_ms).set("max_ms", t->first.max_ms);
            row.set("gflops", bench::forward_gflops(engine->local_engine(), batch, seq, seconds) *
                                  mpi->size());
            row.set("tokens_per_s", static_cast<double>(batch * seq) / seconds);
            row.set("exchange_ms", t->second.median_ms)
                .set("exchange_fraction", t->second.median_ms / t->first.median_ms);
            rows.push_back(finish(
                row.set("commit", info.git_commit).set("cpu_model", info.cpu_model), o.format));
          }
        }
        continue;
      }
      for (auto kv_len : o.kv_len) {
        Result<Tensor> prompt = bench::random_tensor(Shape{kv_len, o.layer.d_model}, 3);
        Result<Tensor> prompt_out = Tensor::zeros(Shape{kv_len, o.layer.d_model});
        Result<Tensor> x = bench::random_tensor(Shape{1, o.layer.d_model}, 5);
        Result<Tensor> y = Tensor::zeros(Shape{1, o.layer.d_model});
        if (!prompt.ok() || !prompt_out.ok() || !x.ok() || !y.ok()) {
          return fail(Status(ErrorCode::kResourceExhausted, "cannot allocate the decode inputs"));
        }
        Result<dist::DistributedSession> session = engine->new_session();
        if (!session.ok()) return fail(session.status());
        if (Status s = session->prefill(prompt->view(), prompt_out->view()); !s.ok())
          return fail(s);
        auto t = time_calls([&](int) { return session->step(x->view(), y->view()); });
        if (!t.ok()) return fail(t.status());
        Row row = base;
        row.set("kv_len", kv_len)
            .set("median_ms", t->first.median_ms)
            .set("min_ms", t->first.min_ms);
        row.set("max_ms", t->first.max_ms).set("tokens_per_s", 1e3 / t->first.median_ms);
        row.set("exchange_ms", t->second.median_ms)
            .set("exchange_fraction", t->second.median_ms / t->first.median_ms);
        rows.push_back(
            finish(row.set("commit", info.git_commit).set("cpu_model", info.cpu_model), o.format));
      }
    }
  }
  if (root) write_rows(std::cout, o.format, rows);
  return 0;
}
#endif

int run_bench(BenchOptions o) {
  if (!o.preset.empty()) {
    const bench::Workload given = o.layer;
    const std::optional<bench::Workload> p = bench::preset(o.preset);
    o.layer = *p;  // the flag's validator admits only known presets
    if (o.batch_opt->count() == 0) o.batch = {p->batch};
    if (o.seq_len_opt->count() == 0) o.seq_len = {p->seq_len};
    if (o.d_model_opt->count() > 0) o.layer.d_model = given.d_model;
    if (o.heads_opt->count() > 0) o.layer.num_heads = given.num_heads;
    if (o.causal_opt->count() > 0) o.layer.causal = given.causal;
  }
  o.shape.apply(o.layer);
  const RuntimeInfo info = runtime_info();
  std::cerr << "attn bench: " << info.cpu_model << ", " << info.cpus << " CPUs, kernels "
            << (o.run.isa == "auto" ? info.default_isa : o.run.isa) << ", commit "
            << info.git_commit << "\n";
  if (o.distributed) {
#if ATTN_HAVE_MPI
    return bench_distributed(o, info);
#else
    return fail(Status(ErrorCode::kUnsupported, "--distributed: this attn was built without MPI"));
#endif
  }
  if (o.serve_sim) return bench_serve_sim(o, info);
  if (o.decode) return bench_decode(o, info);
  Result<Isa> isa = parse_isa(o.run.isa);
  PeakProbe peak(isa.ok() ? *isa : Isa::kAuto);
  return bench_forward(o, info, peak);
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand(
      "bench", "Measure forward() or decode-step throughput over a sweep of sizes");
  sub->add_option("--preset", o->preset,
                  "A released model's attention layer (flags given beside it win): gpt2-small "
                  "(batch 8, seq_len 1024, d_model 768, 12 heads), llama-3.2-1b (batch 4, d 2048, "
                  "32 heads, 8 kv heads, head_dim 64, rope neox, theta 500000), qwen2-0.5b (d "
                  "896, 14 heads, 2 kv heads, head_dim 64, q/k/v bias, theta 1000000), "
                  "mistral-7b (batch 1, d 4096, 32 heads, 8 kv heads, head_dim 128, window 4096)")
      ->check(CLI::IsMember(bench::preset_names()));
  const CLI::Validator size = in_range(1, kMaxSizeFlag);
  o->batch_opt = sub->add_option("--batch", o->batch, "batch (comma-separated list)")
                     ->delimiter(',')
                     ->check(size);
  o->seq_len_opt =
      sub->add_option("--seq-len", o->seq_len, "seq_len (list)")->delimiter(',')->check(size);
  o->d_model_opt = sub->add_option("--d-model", o->layer.d_model, "d_in = d_out")->check(size);
  o->heads_opt =
      sub->add_option("--num-heads,--heads", o->layer.num_heads, "num_heads")->check(size);
  o->shape.add_to(sub);
  o->run.add_to(sub, /*sweep=*/true);
  o->dtypes.add_to(sub, /*sweep=*/true);
  sub->add_option("--impl", o->impl,
                  "Attention paths: fused (flash), unfused (scores materialised)")
      ->delimiter(',')
      ->check(CLI::IsMember({"fused", "unfused"}));
  o->causal_opt =
      sub->add_flag("--causal,!--no-causal", o->layer.causal, "Causal mask (default) or none");
  sub->add_option("--warmup", o->warmup, "Untimed runs before measuring")
      ->check(in_range(0, 1000000));
  sub->add_option("--reps", o->reps, "Timed runs per row (decode: steps)")
      ->check(in_range(1, 1000000));
  sub->add_option("--format", o->format, "table, csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}));
  sub->add_flag("--decode", o->decode,
                "Measure one decode step against a KV cache instead of forward()");
  sub->add_flag("--distributed", o->distributed,
                "Split the heads over the ranks of `mpirun -np P attn bench --distributed ...` "
                "(--threads per rank; rank 0 writes the rows, with the exchange's share)");
  sub->add_option("--kv-len,--context", o->kv_len, "Decode: kv_len, the cached positions (list)")
      ->delimiter(',')
      ->check(size);
  sub->add_flag("--serve-sim", o->serve_sim,
                "Simulate serving: continuous batching of --sequences sequences (chunked "
                "prefill + decode in ragged advance() calls, one cache pool)");
  sub->add_option("--sequences", o->sim.sequences, "--serve-sim: sequences")->check(size);
  sub->add_option("--prompt-len", o->prompt_len,
                  "--serve-sim: prompt lengths MIN:MAX, uniform (seeded)");
  sub->add_option("--gen-len", o->sim.gen_len, "--serve-sim: generated tokens per sequence")
      ->check(size);
  sub->add_option("--concurrent", o->sim.concurrent,
                  "--serve-sim: most live sequences (default: all)")
      ->check(size);
  sub->add_option("--max-batch-tokens", o->sim.max_batch_tokens,
                  "--serve-sim: most tokens per engine call")
      ->check(size);
  sub->add_option("--seed", o->sim.seed, "--serve-sim: seed of the prompt lengths");
  return {sub, [o] { return run_bench(*o); }};
}

}  // namespace attn::tools
