// Prometheus text rendering of the server's metrics (text format 0.0.4).
#include "metrics.hpp"

#include <cstdio>

namespace attn::serve {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void gauge(std::string& out, const std::string& name, const std::string& help, double v) {
  header(out, name, "gauge", help);
  out += name + " " + number(v) + "\n";
}

void counter(std::string& out, const std::string& name, const std::string& help, double v) {
  header(out, name, "counter", help);
  out += name + " " + number(v) + "\n";
}

}  // namespace

template <std::size_t N>
void Histogram<N>::render(std::string& out, const std::string& name,
                          const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  header(out, name, "histogram", help);
  for (std::size_t i = 0; i < N; ++i) {
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(counts_[i]) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

void Metrics::count_request(const std::string& endpoint, int status, double seconds) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_[{endpoint, status}];
  }
  if (endpoint == "infer") latency_.observe(seconds);
}

void Metrics::count_batch(std::int64_t tokens, std::int64_t decode, std::int64_t prefill) {
  batch_tokens_.observe(static_cast<double>(tokens));
  engine_calls_.fetch_add(1, std::memory_order_relaxed);
  generated_.fetch_add(decode, std::memory_order_relaxed);
  prefilled_.fetch_add(prefill, std::memory_order_relaxed);
}

std::string Metrics::render(const Live& live) const {
  std::string out;
  header(out, "attn_requests_total", "counter", "HTTP requests answered, by endpoint and status");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : requests_) {
      out += "attn_requests_total{endpoint=\"" + key.first + "\",status=\"" +
             std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
    }
  }
  latency_.render(out, "attn_request_duration_seconds",
                  "Latency of infer requests, from the body read to the response built");
  batch_tokens_.render(out, "attn_batch_tokens",
                       "Tokens per engine batch (all sequences and stateless requests merged)");
  counter(out, "attn_engine_calls_total", "Engine batches run",
          static_cast<double>(engine_calls_.load()));
  counter(out, "attn_generated_tokens_total", "Tokens run as one-token decode steps",
          static_cast<double>(generated_.load()));
  counter(out, "attn_prefilled_tokens_total", "Tokens run as prompt (prefill) chunks",
          static_cast<double>(prefilled_.load()));
  counter(out, "attn_expired_sequences_total", "Sequences dropped after --sequence-timeout",
          static_cast<double>(expired_sequences.load()));
  gauge(out, "attn_live_sequences", "Stateful sequences holding a KV cache",
        static_cast<double>(live.sequences));
  gauge(out, "attn_pool_used_bytes", "KV-cache bytes held (sequences and stateless requests)",
        static_cast<double>(live.pool_used_bytes));
  gauge(out, "attn_pool_capacity_bytes", "KV-cache bytes the server may hold (--max-cache-bytes)",
        static_cast<double>(live.pool_capacity_bytes));
  gauge(out, "attn_queue_depth", "Infer requests admitted and not yet answered",
        static_cast<double>(live.queue_depth));
  gauge(out, "attn_queued_tokens", "Tokens of admitted requests not yet run",
        static_cast<double>(live.queued_tokens));
  return out;
}

template class Histogram<12>;
template class Histogram<14>;

}  // namespace attn::serve
