// The serving simulation of attn bench --serve-sim (serve_sim.hpp); public API only.
#include "serve_sim.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "attn/cache_pool.hpp"

namespace attn::tools {
namespace {

using Clock = std::chrono::steady_clock;

// Peak resident set of this process (VmHWM), or 0.
std::size_t rss_peak_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Live {
  Session session;
  std::int64_t prompt = 0;     // prompt length
  std::int64_t prefilled = 0;  // prompt tokens fed
  std::int64_t generated = 0;  // decode steps done
};

}  // namespace

Result<ServeSimResult> run_serve_sim(const Engine& engine, const ServeSimOptions& o) {
  const LayerConfig& c = engine.config();
  const std::int64_t concurrent = o.concurrent > 0 ? o.concurrent : o.sequences;
  if (o.prompt_min < 1 || o.prompt_max < o.prompt_min || o.gen_len < 1 || o.sequences < 1 ||
      o.max_batch_tokens < 1) {
    return Status(ErrorCode::kInvalidArgument,
                  "serve-sim: need 1 <= prompt MIN <= MAX, gen_len >= 1, sequences >= 1, "
                  "max_batch_tokens >= 1");
  }
  if (o.prompt_max + o.gen_len > c.context_length) {
    return Status(ErrorCode::kInvalidArgument,
                  "serve-sim: prompt MAX + gen_len exceeds the "
                  "engine's context_length");
  }
  if (o.max_batch_tokens < std::min(concurrent, o.sequences)) {
    return Status(ErrorCode::kInvalidArgument,
                  "serve-sim: --max-batch-tokens must hold one token per concurrent sequence");
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int64_t> len(o.prompt_min, o.prompt_max);
  std::vector<std::int64_t> prompts(static_cast<std::size_t>(o.sequences));
  for (auto& p : prompts) p = len(rng);

  // The pool: room for `concurrent` sequences at their longest, whole blocks each.
  // A pool of a few blocks, to read the block size (blocks of up to 4096 positions).
  Result<CachePool> probe =
      CachePool::create(engine, static_cast<std::size_t>(2 * c.kv_dim()) * sizeof(float) * 4096);
  if (!probe.ok()) return probe.status();
  const auto bp = static_cast<std::size_t>(probe->block_positions());
  const std::size_t per_seq = (static_cast<std::size_t>(o.prompt_max + o.gen_len) + bp - 1) / bp;
  Result<CachePool> pool = CachePool::create(
      engine,
      per_seq * static_cast<std::size_t>(std::min(concurrent, o.sequences)) * probe->block_bytes());
  if (!pool.ok()) return pool.status();
  const double kv_bytes_per_position =
      static_cast<double>(probe->block_bytes()) / static_cast<double>(bp);

  // Inputs: rows of one random buffer (their values do not change the timing).
  const auto d_in = static_cast<std::size_t>(c.d_in), d_out = static_cast<std::size_t>(c.d_out);
  const auto t_max = static_cast<std::size_t>(o.max_batch_tokens);
  std::vector<float> x(t_max * d_in), y(t_max * d_out);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : x) v = u(rng);

  ServeSimResult r;
  r.pool_capacity_bytes = pool->capacity_bytes();
  std::vector<Live> live;
  live.reserve(static_cast<std::size_t>(concurrent));
  std::size_t next = 0;
  std::vector<Session*> batch;
  std::vector<std::int64_t> counts;
  std::vector<double> call_ms, decode_ms, decode_bytes;
  std::size_t peak_seen = 0;
  while (next < prompts.size() || !live.empty()) {
    while (static_cast<std::int64_t>(live.size()) < concurrent && next < prompts.size()) {
      Result<Session> s = engine.new_session(pool.value());
      if (!s.ok()) return s.status();
      live.push_back(Live{std::move(s.value()), prompts[next++], 0, 0});
    }
    batch.clear();
    counts.clear();
    std::int64_t budget = o.max_batch_tokens;
    double kv_read = 0;
    for (Live& l : live) {  // decode tokens first: one each
      if (l.prefilled < l.prompt || budget == 0) continue;
      batch.push_back(&l.session);
      counts.push_back(1);
      kv_read += static_cast<double>(l.session.position() + 1) * kv_bytes_per_position;
      --budget;
    }
    const std::size_t decoders = batch.size();
    for (Live& l : live) {  // then prompt chunks, oldest first
      if (l.prefilled >= l.prompt || budget == 0) continue;
      const std::int64_t n = std::min(budget, l.prompt - l.prefilled);
      batch.push_back(&l.session);
      counts.push_back(n);
      budget -= n;
    }
    const std::int64_t tokens = o.max_batch_tokens - budget;
    const ConstTensorView xv{x.data(), Shape{tokens, c.d_in}};
    const TensorView yv{y.data(), Shape{tokens, c.d_out}};
    const auto t0 = Clock::now();
    if (Status s = engine.advance(batch, counts, xv, yv); !s.ok()) return s;
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    call_ms.push_back(ms);
    r.seconds += ms * 1e-3;
    ++r.calls;
    if (decoders == batch.size() && static_cast<std::int64_t>(decoders) == concurrent) {
      decode_ms.push_back(ms);
      decode_bytes.push_back(kv_read);
    }
    // Pool use at its peak, and the live positions' KV bytes at that moment.
    const std::size_t used = pool->used_bytes();
    if (used > peak_seen) {
      peak_seen = used;
      double live_bytes = 0;
      for (const Live& l : live)
        live_bytes += static_cast<double>(l.session.position()) * kv_bytes_per_position;
      r.live_kv_bytes_peak = static_cast<std::size_t>(live_bytes);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Live& l = *std::find_if(live.begin(), live.end(),
                              [&](const Live& v) { return &v.session == batch[i]; });
      if (i < decoders) {
        ++l.generated;
        ++r.generated_tokens;
      } else {
        l.prefilled += counts[i];
        r.prefill_tokens += counts[i];
      }
    }
    // Finished sequences leave and give their blocks back.
    live.erase(
        std::remove_if(live.begin(), live.end(), [&](Live& l) { return l.generated >= o.gen_len; }),
        live.end());
  }
  r.pool_bytes_peak = pool->peak_used_bytes();
  r.generated_tokens_per_s = static_cast<double>(r.generated_tokens) / r.seconds;
  r.prefill_tokens_per_s = static_cast<double>(r.prefill_tokens) / r.seconds;
  r.call_p50_ms = percentile(call_ms, 0.5);
  r.call_p99_ms = percentile(call_ms, 0.99);
  r.decode_calls = static_cast<std::int64_t>(decode_ms.size());
  r.decode_call_p50_ms = percentile(decode_ms, 0.5);
  r.decode_call_bytes = percentile(decode_bytes, 0.5) + static_cast<double>(engine.weight_bytes());
  r.rss_peak_bytes = rss_peak_bytes();
  return r;
}

}  // namespace attn::tools
