// `attn serve`: one attention layer behind the Open Inference Protocol (KServe v2) over HTTP,
// with continuous batching, stateful sequences, limits and Prometheus metrics (docs/serving.md).
#include <signal.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "attn/engine.hpp"
#include "attn/io.hpp"
#include "attn/runtime.hpp"
#include "cli_flags.hpp"
#include "commands.hpp"
#include "layer_args.hpp"
#include "serve/scheduler.hpp"
#include "serve/server.hpp"

namespace attn::tools {
namespace {

struct ServeArgs {
  std::string weights;
  LayerArgs layer;
  RunFlags run;
  std::string host = "127.0.0.1";
  std::int64_t port = 8000;
  std::string model_name = "attn";
  std::int64_t max_batch_tokens = 256;
  std::int64_t max_sequences = 64;
  std::int64_t max_queue = 128;
  std::int64_t max_request_bytes = 64 << 20;
  std::int64_t max_cache_bytes = 0;
  double sequence_timeout = 60;
  std::int64_t http_threads = 128;
  double shutdown_timeout = 30;
};

int fail(const std::string& message) {
  std::cerr << "attn serve: " << message << "\n";
  return 1;
}

int serve(const ServeArgs& args) {
  // SIGTERM and SIGINT are taken by sigtimedwait below: blocked before any thread starts (the
  // engine's and the server's threads inherit the mask). A closed client socket is an error
  // return, not a signal.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Result<io::LayerOptions> options = args.layer.options();
  if (!options.ok()) return fail(options.status().to_string());
  Result<io::SafetensorsFile> file = io::SafetensorsFile::open(args.weights);
  if (!file.ok()) return fail(file.status().to_string());
  Result<io::Layer> layer = io::load_layer(file.value(), options.value());
  if (!layer.ok()) return fail(layer.status().to_string());
  const LayerConfig& config = layer->config;
  if (config.context_length <= 0) {
    return fail(args.weights + " does not give context_length: pass --context-length");
  }
  RunOptions run;
  if (Status s = args.run.apply(run); !s.ok()) return fail(s.to_string());
  Result<Engine> engine = Engine::create(config, layer->weights, run);
  if (!engine.ok()) return fail(engine.status().to_string());

  serve::Metrics metrics;
  serve::SchedulerLimits limits;
  limits.max_batch_tokens = args.max_batch_tokens;
  limits.max_sequences = args.max_sequences;
  limits.max_queue = args.max_queue;
  limits.max_cache_bytes = args.max_cache_bytes;
  limits.sequence_timeout_s = args.sequence_timeout;
  serve::Scheduler scheduler(
      engine.value(), std::make_unique<serve::EngineBatchRunner>(engine.value()), limits, metrics);
  if (Status s = scheduler.start(); !s.ok()) return fail(s.to_string());

  serve::HttpOptions http;
  http.host = args.host;
  http.port = static_cast<int>(args.port);
  http.model_name = args.model_name;
  http.max_request_bytes = static_cast<std::size_t>(args.max_request_bytes);
  http.http_threads = static_cast<int>(args.http_threads);
  http.max_waiting_conns = static_cast<int>(2 * args.http_threads);
  http.version = runtime_info().version;
  http.description = describe(config);
  const serve::ModelShape shape{config.d_in, config.d_out, config.context_length};
  serve::HttpServer server(http, shape, scheduler, metrics);
  const int port = server.bind();
  if (port <= 0) {
    return fail("cannot listen on " + args.host + ":" + std::to_string(args.port) +
                " (in use, or not an address of this machine)");
  }
  // The line tests and scripts read to find an ephemeral port.
  std::printf("attn serve: listening on http://%s:%d (model '%s': %s; kernels %s, %d threads)\n",
              args.host.c_str(), port, args.model_name.c_str(), describe(config).c_str(),
              engine->isa(), engine->threads());
  std::fflush(stdout);

  std::atomic<bool> server_ended{false};
  std::thread http_thread([&] {
    server.run();
    server_ended = true;
  });
  int signo = 0;
  while (!server_ended) {
    const timespec tick{0, 200 * 1000 * 1000};
    signo = sigtimedwait(&stop_signals, nullptr, &tick);
    if (signo > 0) break;
  }
  if (signo > 0) {
    std::fprintf(stderr, "attn serve: %s: finishing the requests in flight\n",
                 signo == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  // Bounded shutdown: a request still running after --shutdown-timeout ends the process.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::duration<double>(args.shutdown_timeout),
                     [&] { return done; })) {
      std::fprintf(stderr, "attn serve: requests still running after %g s; exiting\n",
                   args.shutdown_timeout);
      std::_Exit(1);
    }
  });
  server.stop();
  http_thread.join();
  scheduler.drain();
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
  std::fprintf(stderr, "attn serve: stopped\n");
  return signo > 0 ? 0 : 1;
}

}  // namespace

Command add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* sub = app.add_subcommand(
      "serve",
      "Serve one attention layer over HTTP with the Open Inference Protocol (KServe v2): "
      "continuous batching, stateful sequences, /metrics (docs/serving.md)");
  sub->add_option("--weights", args->weights, "Weights: a .safetensors file")->required();
  args->layer.add_to(sub);
  args->run.add_to(sub, /*sweep=*/false);
  sub->add_option("--host", args->host, "Address to listen on (loopback by default)")
      ->capture_default_str();
  sub->add_option("--port", args->port, "TCP port; 0 = any free port (printed on stdout)")
      ->check(in_range(0, 65535))
      ->capture_default_str();
  sub->add_option("--model-name", args->model_name, "The model's name in /v2/models/{name}")
      ->capture_default_str();
  sub->add_option("--max-batch-tokens", args->max_batch_tokens,
                  "Most tokens per engine batch (decodes and prompt chunks merged)")
      ->check(in_range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--max-sequences", args->max_sequences,
                  "Most live stateful sequences (then sequence_start gets 429)")
      ->check(in_range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--max-queue", args->max_queue,
                  "Most infer requests admitted and not yet answered (then 503)")
      ->check(in_range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--max-request-bytes", args->max_request_bytes, "Largest request body (then 413)")
      ->check(in_range(64, std::int64_t{1} << 34))
      ->capture_default_str();
  sub->add_option("--max-cache-bytes", args->max_cache_bytes,
                  "Budget of the KV-cache pool all sessions take 128-position blocks from "
                  "(sequences and stateless requests); 0 = (max-sequences + 16) full-context "
                  "sessions")
      ->check(in_range(0, std::int64_t{1} << 50))
      ->capture_default_str();
  sub->add_option("--sequence-timeout", args->sequence_timeout,
                  "Seconds after which an idle sequence is dropped and its cache freed")
      ->check(finite_in_range(0.001, 1e9))
      ->capture_default_str();
  sub->add_option("--http-threads", args->http_threads,
                  "Connections served at once (twice as many may wait; more get 503)")
      ->check(in_range(1, 4096))
      ->capture_default_str();
  sub->add_option("--shutdown-timeout", args->shutdown_timeout,
                  "Seconds SIGTERM/SIGINT waits for requests in flight before exiting anyway")
      ->check(finite_in_range(0.1, 3600))
      ->capture_default_str();
  return {sub, [args] { return serve(*args); }};
}

}  // namespace attn::tools
