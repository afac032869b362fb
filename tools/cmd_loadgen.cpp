// `attn loadgen`: drives a KServe v2 server on this machine (attn serve) with concurrent
// stateless or sequence traffic and prints throughput and latency percentiles.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli_flags.hpp"
#include "commands.hpp"
#include "serve/protocol.hpp"

namespace attn::tools {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct LoadgenArgs {
  std::string url = "http://127.0.0.1:8000";
  std::string model = "attn";
  std::int64_t concurrency = 8;
  std::int64_t requests = 0;
  double duration = 0;
  std::string mode = "stateless";
  std::int64_t prompt_min = 16, prompt_max = 16, steps = 16;
  std::string body = "binary";
  std::string format = "table";
  double timeout = 30;
  std::int64_t seed = 1;
};

int fail(const std::string& message, int code = 1) {
  std::cerr << "attn loadgen: " << message << "\n";
  return code;
}

// Splits http://HOST:PORT into host and port; only loopback hosts are accepted.
bool parse_url(const std::string& url, std::string& host, int& port, std::string& error) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    error = "--url must start with http://";
    return false;
  }
  std::string rest = url.substr(scheme.size());
  if (const auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  std::string port_text = "80";
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos) {
      error = "--url: unclosed [";
      return false;
    }
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port_text = rest.substr(close + 2);
  } else if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
  } else {
    host = rest;
  }
  // Numeric loopback addresses only (and "localhost"): a name like 127.example.com is not.
  in_addr v4{};
  in6_addr v6{};
  const bool loopback =
      host == "localhost" ||
      (inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
      (inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6));
  if (!loopback) {
    error = "--url host '" + host + "' is not a loopback address (127.0.0.0/8, ::1, localhost)";
    return false;
  }
  try {
    port = std::stoi(port_text);
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 1 || port > 65535) {
    error = "--url: bad port '" + port_text + "'";
    return false;
  }
  return true;
}

struct Sample {
  double ms;
  int status;
  bool decode;
  std::int64_t tokens;
};

// Builds an infer body of x [n, d_in] from `values`; returns the header length for binary.
std::optional<std::size_t> build_body(std::string& body, const float* values, std::int64_t n,
                                      std::int64_t d_in, bool binary, const json& params) {
  json head{{"inputs", json::array()}};
  json input{{"name", "x"}, {"datatype", "FP32"}, {"shape", {n, d_in}}};
  if (!params.empty()) head["parameters"] = params;
  const std::size_t bytes = static_cast<std::size_t>(n * d_in) * sizeof(float);
  if (binary) {
    input["parameters"] = {{"binary_data_size", bytes}};
    head["inputs"].push_back(input);
    head["outputs"] = json::array({json{{"name", "y"}, {"parameters", {{"binary_data", true}}}}});
    body = head.dump();
    const std::size_t header = body.size();
    body.append(reinterpret_cast<const char*>(values), bytes);
    return header;
  }
  input["data"] = json::array();
  head["inputs"].push_back(input);
  body = head.dump();
  // Splice the numbers into the empty data array by hand: much faster than a json array.
  const std::string marker = "\"data\":[]";
  const auto at = body.find(marker);
  std::string numbers;
  numbers.reserve(static_cast<std::size_t>(n * d_in) * 12);
  for (std::int64_t i = 0; i < n * d_in; ++i) {
    if (i) numbers += ',';
    serve::append_float(numbers, values[i]);
  }
  body.insert(at + marker.size() - 1, numbers);
  return std::nullopt;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(p / 100.0 * double(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

int loadgen(const LoadgenArgs& args) {
  std::string host, error;
  int port = 0;
  if (!parse_url(args.url, host, port, error)) return fail(error, 2);
  if (args.requests <= 0 && args.duration <= 0) return fail("give --requests or --duration", 2);
  if (args.prompt_min > args.prompt_max) return fail("--prompt-min exceeds --prompt-max", 2);
  const bool sequences = args.mode == "sequence", binary = args.body == "binary";
  const auto timeout = std::chrono::duration<double>(args.timeout);

  // The model's d_in and context_length from its metadata.
  httplib::Client probe(host, port);
  probe.set_connection_timeout(std::chrono::seconds(5));
  probe.set_read_timeout(std::chrono::seconds(5));
  auto meta = probe.Get(("/v2/models/" + args.model).c_str());
  if (!meta) return fail("cannot reach " + args.url + ": " + httplib::to_string(meta.error()));
  if (meta->status != 200) {
    return fail("GET /v2/models/" + args.model + ": HTTP " + std::to_string(meta->status) + " " +
                meta->body);
  }
  const json m = json::parse(meta->body, nullptr, false);
  std::int64_t d_in = 0, context = 0;
  try {
    d_in = m.at("inputs").at(0).at("shape").back().get<std::int64_t>();
    context = m.at("parameters").at("context_length").get<std::int64_t>();
  } catch (const std::exception&) {
    return fail("unexpected model metadata: " + meta->body);
  }
  const std::int64_t per_sequence = args.prompt_max + (sequences ? args.steps : 0);
  if (per_sequence > context) {
    return fail("--prompt-max (+ --steps) " + std::to_string(per_sequence) +
                    " exceeds the model's context_length " + std::to_string(context),
                2);
  }

  std::mt19937 rng(static_cast<unsigned>(args.seed));
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<float> x(static_cast<std::size_t>(per_sequence * d_in));
  for (float& v : x) v = uni(rng);

  std::atomic<std::int64_t> tickets{args.requests > 0 ? args.requests : INT64_MAX};
  const auto t0 = Clock::now();
  const auto deadline = args.duration > 0 ? t0 + std::chrono::duration_cast<Clock::duration>(
                                                     std::chrono::duration<double>(args.duration))
                                          : Clock::time_point::max();
  // Takes n tickets at once (a whole sequence); false when too few are left or time is up.
  auto take = [&](std::int64_t n) {
    if (Clock::now() >= deadline) return false;
    std::int64_t left = tickets.load();
    while (left >= n) {
      if (tickets.compare_exchange_weak(left, left - n)) return true;
    }
    return false;
  };
  std::mutex mu;
  std::vector<Sample> samples;
  const std::uint64_t id_base =
      (static_cast<std::uint64_t>(getpid()) << 32) ^
      static_cast<std::uint64_t>(Clock::now().time_since_epoch().count() & 0xffffffff);

  auto worker = [&](std::int64_t w) {
    std::mt19937 wrng(static_cast<unsigned>(args.seed * 7919 + w));
    std::uniform_int_distribution<std::int64_t> prompt(args.prompt_min, args.prompt_max);
    httplib::Client cli(host, port);
    cli.set_keep_alive(true);
    cli.set_tcp_nodelay(true);  // headers and body go in two writes: no Nagle wait for an ACK
    cli.set_connection_timeout(std::chrono::seconds(5));
    cli.set_read_timeout(timeout);
    cli.set_write_timeout(timeout);
    std::vector<Sample> mine;
    std::string body;
    auto send = [&](const float* values, std::int64_t n, const json& params, bool decode) {
      const auto header = build_body(body, values, n, d_in, binary, params);
      httplib::Headers headers;
      if (header) headers.emplace("Inference-Header-Content-Length", std::to_string(*header));
      const auto s = Clock::now();
      auto res = cli.Post(("/v2/models/" + args.model + "/infer").c_str(), headers, body,
                          binary ? "application/octet-stream" : "application/json");
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - s).count();
      mine.push_back({ms, res ? res->status : 0, decode, n});
      return res && res->status == 200;
    };
    std::uint64_t k = 0;
    while (true) {
      const std::int64_t n = prompt(wrng);
      if (!sequences) {
        if (!take(1)) break;
        send(x.data(), n, json::object(), n == 1);
        continue;
      }
      if (!take(1 + args.steps)) break;
      const std::uint64_t id = id_base + static_cast<std::uint64_t>(w) * 1000000007ULL + k++;
      json params{{"sequence_id", id}, {"sequence_start", true}, {"sequence_end", args.steps == 0}};
      bool ok = send(x.data(), n, params, false);
      for (std::int64_t s = 0; ok && s < args.steps; ++s) {
        params = {{"sequence_id", id}, {"sequence_end", s + 1 == args.steps}};
        ok = send(x.data() + (n + s) * d_in, 1, params, true);
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    samples.insert(samples.end(), mine.begin(), mine.end());
  };
  std::vector<std::thread> threads;
  for (std::int64_t w = 0; w < args.concurrency; ++w) threads.emplace_back(worker, w);
  for (std::thread& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<double> all, decode;
  std::map<int, std::int64_t> statuses;
  std::int64_t tokens = 0, generated = 0;
  for (const Sample& s : samples) {
    ++statuses[s.status];
    if (s.status != 200) continue;
    all.push_back(s.ms);
    tokens += s.tokens;
    if (s.decode) {
      decode.push_back(s.ms);
      generated += s.tokens;
    }
  }
  json report{{"mode", args.mode},
              {"body", args.body},
              {"concurrency", args.concurrency},
              {"requests", samples.size()},
              {"ok", all.size()},
              {"seconds", seconds},
              {"requests_per_s", double(all.size()) / seconds},
              {"tokens_per_s", double(tokens) / seconds},
              {"generated_tokens_per_s", double(generated) / seconds},
              {"p50_ms", percentile(all, 50)},
              {"p90_ms", percentile(all, 90)},
              {"p99_ms", percentile(all, 99)},
              {"decode_p50_ms", percentile(decode, 50)},
              {"decode_p99_ms", percentile(decode, 99)}};
  json by_status = json::object();
  for (const auto& [code, n] : statuses) by_status[std::to_string(code)] = n;
  report["statuses"] = by_status;
  if (args.format == "json") {
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf("%-9s %-6s %5s %8s %9s %10s %11s %8s %8s %8s %10s %10s  %s\n", "mode", "body",
                "conc", "requests", "req/s", "tokens/s", "generated/s", "p50 ms", "p90 ms",
                "p99 ms", "dec p50", "dec p99", "statuses");
    std::string st;
    for (const auto& [code, n] : statuses)
      st += std::to_string(code) + ":" + std::to_string(n) + " ";
    std::printf("%-9s %-6s %5lld %8zu %9.1f %10.1f %11.1f %8.2f %8.2f %8.2f %10.2f %10.2f  %s\n",
                args.mode.c_str(), args.body.c_str(), static_cast<long long>(args.concurrency),
                samples.size(), double(all.size()) / seconds, double(tokens) / seconds,
                double(generated) / seconds, percentile(all, 50), percentile(all, 90),
                percentile(all, 99), percentile(decode, 50), percentile(decode, 99), st.c_str());
  }
  return statuses.size() == 1 && statuses.count(200) ? 0 : 3;
}

}  // namespace

Command add_loadgen(CLI::App& app) {
  auto args = std::make_shared<LoadgenArgs>();
  CLI::App* sub = app.add_subcommand(
      "loadgen",
      "Load-test a KServe v2 server on this machine (attn serve): throughput and latency "
      "percentiles; exit 3 when a request did not get 200");
  sub->add_option("--url", args->url, "Server base URL (loopback hosts only)")
      ->capture_default_str();
  sub->add_option("--model", args->model, "Model name")->capture_default_str();
  sub->add_option("--concurrency", args->concurrency, "Clients sending at once")
      ->check(in_range(1, 1024))
      ->capture_default_str();
  sub->add_option("--requests", args->requests, "Stop after this many requests")
      ->check(in_range(1, 10000000));
  sub->add_option("--duration", args->duration, "Stop starting new work after this many seconds")
      ->check(finite_in_range(0.1, 3600));
  sub->add_option("--mode", args->mode,
                  "stateless (one prompt per request) or sequence (a prompt with "
                  "sequence_start, then --steps one-token requests)")
      ->check(CLI::IsMember({"stateless", "sequence"}))
      ->capture_default_str();
  sub->add_option("--prompt-min", args->prompt_min, "Shortest prompt (tokens; uniform to max)")
      ->check(in_range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--prompt-max", args->prompt_max, "Longest prompt (tokens)")
      ->check(in_range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--steps", args->steps, "Decode steps per sequence (sequence mode)")
      ->check(in_range(0, 1 << 20))
      ->capture_default_str();
  sub->add_option("--body", args->body, "Request encoding: json or binary (Triton's extension)")
      ->check(CLI::IsMember({"json", "binary"}))
      ->capture_default_str();
  sub->add_option("--format", args->format, "Report: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  sub->add_option("--timeout", args->timeout, "Seconds each request may take")
      ->check(finite_in_range(0.1, 600))
      ->capture_default_str();
  sub->add_option("--seed", args->seed, "Seed of the inputs and prompt lengths")
      ->capture_default_str();
  return {sub, [args] { return loadgen(*args); }};
}

}  // namespace attn::tools
