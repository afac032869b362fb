// KServe v2 endpoints and /metrics on cpp-httplib; every handler answers, none throws out.
#include "server.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attn::serve {
namespace {

using nlohmann::json;

// Pending connections the kernel queues before accept (Linux caps it at somaxconn).
constexpr int kListenBacklog = 1024;

// Set on the thread that answers connections beyond the waiting list: every request on it
// gets a fast 503.
thread_local bool tl_shedding = false;

// httplib's connection queue, bounded: `workers` threads serve connections, at most
// `max_waiting` accepted connections wait for one, and the rest go to one shedding thread
// that answers each of their requests with 503 at once.
class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(int workers, int max_waiting) : max_waiting_(std::size_t(max_waiting)) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(waiting_, false); });
    threads_.emplace_back([this] { work(shed_, true); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.size() < max_waiting_) {
        waiting_.push_back(std::move(fn));
      } else {
        shed_.push_back(std::move(fn));
      }
    }
    cv_.notify_all();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void work(std::deque<std::function<void()>>& jobs, bool shedding) {
    tl_shedding = shedding;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return shutdown_ || !jobs.empty(); });
        if (jobs.empty()) return;  // shutdown, and every accepted connection served
        fn = std::move(jobs.front());
        jobs.pop_front();
      }
      fn();
    }
  }

  const std::size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> waiting_, shed_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(error_json(message), "application/json");
}

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  ModelShape model;
  Scheduler& scheduler;
  Metrics& metrics;
  httplib::Server http;
  std::atomic<bool> stopping{false};
  int listen_socket = -1;
  std::atomic<bool> ended{false};  // run() returned

  Impl(HttpOptions o, ModelShape m, Scheduler& s, Metrics& mt)
      : options(std::move(o)), model(m), scheduler(s), metrics(mt) {}

  json model_metadata() const {
    auto tensor = [](const char* name, std::int64_t d) {
      return json{{"name", name}, {"datatype", "FP32"}, {"shape", {-1, -1, d}}};
    };
    return json{{"name", options.model_name},
                {"versions", {"1"}},
                {"platform", "attn"},
                {"inputs", {tensor("x", model.d_in)}},
                {"outputs", {tensor("y", model.d_out)}},
                {"parameters",
                 {{"context_length", model.context_length},
                  {"sequences", scheduler.stateful()},
                  {"description", options.description}}}};
  }

  // Wraps a handler: counts it under `endpoint`, answers 500 instead of letting it throw.
  httplib::Server::Handler counted(
      const std::string& endpoint,
      std::function<void(const httplib::Request&, httplib::Response&)> handler) {
    return [this, endpoint, handler = std::move(handler)](const httplib::Request& req,
                                                          httplib::Response& res) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        if (tl_shedding && endpoint == "infer") {
          // A connection beyond the waiting list: refused once its body has been read (an
          // unread body would make the close a reset the client may see before the 503).
          send_error(res, 503, "the server is full (connections)");
        } else {
          handler(req, res);
        }
      } catch (const std::exception& e) {
        send_error(res, 500, std::string("internal error: ") + e.what());
      } catch (...) {
        send_error(res, 500, "internal error");
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      metrics.count_request(endpoint, res.status, seconds);
    };
  }

  bool known_model(const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == options.model_name) return true;
    send_error(res, 404,
               "unknown model '" + std::string(req.matches[1]) + "' (this server has '" +
                   options.model_name + "')");
    return false;
  }

  void infer(const httplib::Request& req, httplib::Response& res) {
    if (!known_model(req, res)) return;
    std::optional<std::string> header_length;
    if (req.has_header("Inference-Header-Content-Length")) {
      header_length = req.get_header_value("Inference-Header-Content-Length");
    }
    const Decoded d = decode_infer_request(
        req.body, header_length ? std::optional<std::string_view>(*header_length) : std::nullopt,
        model, options.max_request_bytes);
    if (!d.ok()) return send_error(res, d.status, d.error);
    const InferOutcome out = scheduler.infer(d.request);
    if (out.status != 200) return send_error(res, out.status, out.error);
    EncodedResponse enc = encode_infer_response(d.request, options.model_name, out.y, model.d_out);
    if (enc.header_length) {
      res.set_header("Inference-Header-Content-Length", std::to_string(*enc.header_length));
    }
    res.status = 200;
    res.set_content(std::move(enc.body), enc.content_type);
  }

  void install() {
    const int waiting = options.max_waiting_conns, threads = options.http_threads;
    http.new_task_queue = [threads, waiting] { return new BoundedTaskQueue(threads, waiting); };
    http.set_payload_max_length(options.max_request_bytes);
    http.set_keep_alive_max_count(1000);
    http.set_keep_alive_timeout(2);  // bounds how long an idle connection delays shutdown
    http.set_read_timeout(10, 0);
    http.set_write_timeout(10, 0);
    http.set_tcp_nodelay(true);
    // httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when Debian built
    // it): a burst of clients would see dropped SYNs and 1 s retransmits. The listening
    // socket is remembered here and listen() again with a larger backlog after binding.
    // httplib's default options add SO_REUSEPORT, which lets a second server bind the same
    // port and take half its connections: SO_REUSEADDR only (restarts need no TIME_WAIT wait).
    http.set_socket_options([this](int sock) {
      const int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_socket = sock;
    });
    // Every error without a body (httplib's own 404, 413, 400) gets the protocol's JSON.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string msg = "HTTP " + std::to_string(res.status);
          if (res.status == 404) msg = "no endpoint " + req.method + " " + req.path;
          if (res.status == 413) {
            msg = "request body exceeds " + std::to_string(options.max_request_bytes) +
                  " bytes (--max-request-bytes)";
          }
          if (res.status == 404 || res.status == 413 || res.status == 400) {
            metrics.count_request("other", res.status, 0);
          }
          send_error(res, res.status, msg);
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                  std::exception_ptr) { send_error(res, 500, "internal error"); });

    http.Get("/v2/health/live", counted("live", [](const auto&, auto& res) {
               send_json(res, 200, json{{"live", true}});
             }));
    http.Get("/v2/health/ready", counted("ready", [this](const auto&, auto& res) {
               const bool ready = !stopping.load();
               send_json(res, ready ? 200 : 503, json{{"ready", ready}});
             }));
    http.Get("/v2", counted("server", [this](const auto&, auto& res) {
               send_json(res, 200,
                         json{{"name", "attn"},
                              {"version", options.version},
                              {"extensions", {"binary_tensor_data", "sequence"}}});
             }));
    http.Get(R"(/v2/models/([^/]+)(?:/versions/1)?)",
             counted("model", [this](const auto& req, auto& res) {
               if (known_model(req, res)) send_json(res, 200, model_metadata());
             }));
    http.Get(
        R"(/v2/models/([^/]+)(?:/versions/1)?/ready)",
        counted("model_ready", [this](const auto& req, auto& res) {
          if (!known_model(req, res)) return;
          const bool ready = !stopping.load();
          send_json(res, ready ? 200 : 503, json{{"name", options.model_name}, {"ready", ready}});
        }));
    http.Post(R"(/v2/models/([^/]+)(?:/versions/1)?/infer)",
              counted("infer", [this](const auto& req, auto& res) { infer(req, res); }));
    http.Get("/metrics", counted("metrics", [this](const auto&, auto& res) {
               res.status = 200;
               res.set_content(metrics.render(scheduler.live()),
                               "text/plain; version=0.0.4; charset=utf-8");
             }));
  }
};

HttpServer::HttpServer(HttpOptions options, ModelShape model, Scheduler& scheduler,
                       Metrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(options), model, scheduler, metrics)) {
  impl_->install();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = -1;
  if (impl_->options.port == 0) {
    port = impl_->http.bind_to_any_port(impl_->options.host);
  } else if (impl_->http.bind_to_port(impl_->options.host, impl_->options.port)) {
    port = impl_->options.port;
  }
  if (port > 0 && impl_->listen_socket >= 0) ::listen(impl_->listen_socket, kListenBacklog);
  return port;
}

void HttpServer::run() {
  impl_->http.listen_after_bind();
  impl_->ended = true;
}

void HttpServer::stop() {
  impl_->stopping = true;
  // httplib's stop() does nothing before its accept loop runs: wait (bounded) for it.
  for (int i = 0; i < 500 && !impl_->http.is_running() && !impl_->ended; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->http.stop();
}

}  // namespace attn::serve
