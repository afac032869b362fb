// The only file that names oneTBB or OpenMP. Each engine owns its scheduler; nothing here
// touches process-wide settings (no global_control, no omp_set_num_threads).
#include "scheduler.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>

#include <omp.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

namespace attn::detail {
namespace {

class SerialScheduler final : public Scheduler {
 public:
  int workers() const noexcept override { return 1; }
  void parallel_for(std::size_t n, std::size_t grain,
                    FunctionRef<void(std::size_t, std::size_t, int)> body) const override {
    grain = std::max<std::size_t>(grain, 1);
    for (std::size_t b = 0; b < n; b += grain) body(b, std::min(n, b + grain), 0);
  }
};

// Tasks run inside an arena the engine owns, so the engine's thread count never changes
// other TBB users in the process, and theirs never change the engine's.
class TbbScheduler final : public Scheduler {
 public:
  explicit TbbScheduler(int threads) : threads_(threads), arena_(threads) { arena_.initialize(); }
  int workers() const noexcept override { return threads_; }
  void parallel_for(std::size_t n, std::size_t grain,
                    FunctionRef<void(std::size_t, std::size_t, int)> body) const override {
    if (n == 0) return;
    if (threads_ == 1) {
      SerialScheduler().parallel_for(n, grain, body);
      return;
    }
    arena_.execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<std::size_t>(0, n, std::max<std::size_t>(grain, 1)),
          [&](const tbb::blocked_range<std::size_t>& r) {
            // Unique among the threads in this arena at any moment: a thread runs one body
            // at a time because bodies never wait on other tasks.
            const int worker = tbb::this_task_arena::current_thread_index();
            body(r.begin(), r.end(), worker);
          },
          tbb::simple_partitioner());
    });
  }

 private:
  int threads_;
  mutable tbb::task_arena arena_;
};

// One parallel region per call with num_threads(n): no process-wide settings are changed.
class OpenMpScheduler final : public Scheduler {
 public:
  explicit OpenMpScheduler(int threads) : threads_(threads) {}
  int workers() const noexcept override { return threads_; }
  void parallel_for(std::size_t n, std::size_t grain,
                    FunctionRef<void(std::size_t, std::size_t, int)> body) const override {
    if (n == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    const long chunks = static_cast<long>((n + grain - 1) / grain);
    // libgomp mallocs a team for every region of one thread, and for every region whose size
    // differs from the last one's (it caches a single team): so one chunk runs here, and
    // every region has the same size, threads_ (workers without a chunk return at once).
    if (threads_ == 1 || chunks == 1) {
      SerialScheduler().parallel_for(n, grain, body);
      return;
    }
#pragma omp parallel num_threads(threads_)
    {
      const int worker = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
      for (long c = 0; c < chunks; ++c) {
        const std::size_t b = static_cast<std::size_t>(c) * grain;
        body(b, std::min(n, b + grain), worker);
      }
    }
  }

 private:
  int threads_;
};

}  // namespace

int available_cpus() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int default_threads() noexcept {
  if (const char* env = std::getenv("ATTN_THREADS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (*end == '\0' && n > 0 && n <= 1024) return static_cast<int>(n);
  }
  return available_cpus();
}

Result<std::unique_ptr<Scheduler>> make_scheduler(Backend backend, int threads) {
  if (threads <= 0) threads = default_threads();
  // More workers than CPUs only time-slice (and TBB warns on stderr when its arena asks for
  // more than the process may run): clamp, and Engine::threads() reports the clamped count.
  threads = std::min(threads, available_cpus());
  try {
    switch (backend) {
      case Backend::kSerial:
        return std::unique_ptr<Scheduler>(new SerialScheduler());
      case Backend::kTbb:
        return std::unique_ptr<Scheduler>(new TbbScheduler(threads));
      case Backend::kOpenMp:
        return std::unique_ptr<Scheduler>(new OpenMpScheduler(threads));
    }
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kResourceExhausted, "cannot create the thread pool");
  } catch (const std::exception& e) {
    return Status(ErrorCode::kInternal, std::string("cannot create the thread pool: ") + e.what());
  }
  return Status(ErrorCode::kInvalidArgument, "unknown backend");
}

}  // namespace attn::detail
