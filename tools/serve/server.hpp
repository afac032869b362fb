// The HTTP layer of attn serve: the KServe v2 endpoints and /metrics on cpp-httplib, in front
// of the scheduler. Connections beyond the worker threads wait in a bounded list; beyond it
// they get a fast 503.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "metrics.hpp"
#include "protocol.hpp"
#include "scheduler.hpp"

namespace attn::serve {

/// How the HTTP side runs (the serve flags of the same names).
struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model_name = "attn";
  std::size_t max_request_bytes = 64 << 20;
  int http_threads = 128;       ///< connections served at once
  int max_waiting_conns = 256;  ///< accepted connections waiting for a thread; then 503
  std::string version;          ///< attn's version, for GET /v2
  std::string description;      ///< the layer, for GET /v2/models/{name}
};

/// The server. Thread safety: stop() may be called from any thread while run() runs.
class HttpServer {
 public:
  HttpServer(HttpOptions options, ModelShape model, Scheduler& scheduler, Metrics& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds host:port (port 0: any free port); returns the bound port, or -1.
  int bind();
  /// Serves until stop(); returns after every in-flight request has been answered.
  void run();
  /// Stops accepting; run() returns once the requests in flight are answered. Called before
  /// run() has started accepting, waits up to 5 s for it.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace attn::serve
