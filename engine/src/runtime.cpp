// Instruction-set resolution and the build/machine description.
#include "attn/runtime.hpp"
#include "attn/probe.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "kernels/isa.hpp"
#include "kernels/kernels.hpp"
#include "scheduler.hpp"

namespace attn {
namespace detail {
const char* build_commit() noexcept;   // generated: build_info.cpp
const char* build_version() noexcept;  // generated: build_info.cpp
}  // namespace detail

namespace {

std::string supported_list() {
  std::string s;
  for (kernels::Isa k : kernels::kAllIsas) {
    if (!kernels::isa_supported(k)) continue;
    s += s.empty() ? "" : ", ";
    s += kernels::isa_name(k);
  }
  return s;
}

}  // namespace

Result<Isa> resolve_isa(Isa requested) {
  Isa isa = requested;
  if (isa == Isa::kAuto) {
    const char* env = std::getenv("ATTN_ISA");
    if (env != nullptr && *env != '\0') {
      Result<Isa> parsed = parse_isa(env);
      if (!parsed.ok())
        return Status(ErrorCode::kInvalidArgument, "ATTN_ISA: " + parsed.status().message());
      isa = *parsed;
    }
  }
  if (isa == Isa::kAuto) return kernels::to_public(kernels::best_isa());
  const std::optional<kernels::Isa> k = kernels::from_public(isa);
  if (!k || !kernels::isa_supported(*k)) {
    return Status(
        ErrorCode::kUnsupported,
        std::string("instruction set ") + to_string(isa) +
            " is not available on this CPU or in this build (available: " + supported_list() + ")");
  }
  return isa;
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.version = detail::build_version();
  info.git_commit = detail::build_commit();
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos)
        info.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  Result<Isa> isa = resolve_isa(Isa::kAuto);
  info.default_isa = isa.ok() ? to_string(*isa) : isa.status().message();
  for (kernels::Isa k : kernels::kAllIsas) {
    if (kernels::isa_supported(k)) info.isas.emplace_back(kernels::isa_name(k));
  }
  info.cpus = detail::available_cpus();
  info.f16c = kernels::f16c_supported();
  info.bf16_dot = kernels::bf16_dot_supported();
  return info;
}

namespace {
kernels::Isa kernel_isa_or_best(Isa isa) {
  Result<Isa> r = resolve_isa(isa);
  return r.ok() ? kernels::from_public(*r).value_or(kernels::best_isa()) : kernels::best_isa();
}
}  // namespace

// The best rate of `run(iterations)` (FLOPs done) over `seconds`, doubling the iterations
// until one run takes 10 ms.
template <class Run>
double best_gflops(double seconds, Run run) {
  using Clock = std::chrono::steady_clock;
  std::size_t iterations = 1 << 16;
  double best = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = Clock::now();
    const double flops = run(iterations);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, flops / dt * 1e-9);
    if (dt < 0.01) iterations *= 2;
  } while (Clock::now() < deadline);
  return best;
}

double measure_peak_gflops(Isa isa, double seconds) {
  const kernels::Isa k = kernel_isa_or_best(isa);
  return best_gflops(seconds, [k](std::size_t n) { return kernels::peak_fma(k, n); });
}

double measure_peak_bf16_gflops(double seconds) {
  if (!kernels::bf16_dot_supported()) return 0;
  return best_gflops(seconds, [](std::size_t n) { return kernels::peak_bf16(n); });
}

double measure_read_bandwidth(int threads, std::size_t bytes, Isa isa) {
  const kernels::Isa k = kernel_isa_or_best(isa);
  threads = std::max(1, threads);
  const std::size_t n = bytes / sizeof(float);
  std::vector<float> buffer;
  try {
    buffer.assign(n, 1.0f);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  using Clock = std::chrono::steady_clock;
  double best = 0;
  std::atomic<float> sink{0};
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<std::thread> pool;
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const std::size_t begin = n * t / threads, end = n * (t + 1) / threads;
        sink.store(kernels::read_sum(k, buffer.data() + begin, end - begin),
                   std::memory_order_relaxed);
      });
    }
    for (auto& th : pool) th.join();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n * sizeof(float)) / dt * 1e-9);
  }
  return best;
}

}  // namespace attn
