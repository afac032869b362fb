// The server's counters, gauges and histograms, rendered in the Prometheus text format.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace attn::serve {

/// A histogram over fixed upper bounds (Prometheus `le` buckets).
/// Thread safety: observe() and render() may run from many threads at once.
template <std::size_t N>
class Histogram {
 public:
  explicit Histogram(std::array<double, N> bounds) : bounds_(bounds) {}

  void observe(double v) {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t i = 0; i < N; ++i) {
      if (v <= bounds_[i]) ++counts_[i];
    }
    ++count_;
    sum_ += v;
  }

  /// Appends the _bucket, _sum and _count lines of `name` (labels: extra text or "").
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::array<double, N> bounds_;
  mutable std::mutex mu_;
  std::array<std::uint64_t, N> counts_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

/// Everything GET /metrics reports. The gauges of live state (sequences, pool bytes, queue
/// depth) are read from the scheduler when rendering.
/// Thread safety: every member may be used from many threads at once.
struct Metrics {
  /// Counts one answered HTTP request and, for infer, its latency.
  void count_request(const std::string& endpoint, int status, double seconds);
  /// Counts one engine call of `tokens` tokens (`decode` of them one-token steps).
  void count_batch(std::int64_t tokens, std::int64_t decode, std::int64_t prefill);

  std::atomic<std::int64_t> expired_sequences{0};

  struct Live {
    std::int64_t sequences = 0;
    std::int64_t pool_used_bytes = 0;
    std::int64_t pool_capacity_bytes = 0;
    std::int64_t queue_depth = 0;
    std::int64_t queued_tokens = 0;
  };
  /// Returns the Prometheus text of every metric, with `live` as the gauges.
  std::string render(const Live& live) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  Histogram<14> latency_{
      {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  Histogram<12> batch_tokens_{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}};
  std::atomic<std::int64_t> engine_calls_{0}, generated_{0}, prefilled_{0};
};

}  // namespace attn::serve
