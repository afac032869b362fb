// The one parallel-for seam: oneTBB, OpenMP or serial, chosen per engine.
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>

#include "attn/config.hpp"
#include "attn/status.hpp"

namespace attn::detail {

/// A non-owning, non-allocating reference to a callable (std::function may allocate).
template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F& f) noexcept  // NOLINT: implicit by design
      : object_(static_cast<void*>(&f)), call_([](void* o, Args... args) -> R {
          return (*static_cast<F*>(o))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

/// Runs task bodies on the backend's threads. Each body gets a worker index in
/// [0, workers()), unique among the bodies running at that moment within one call, so that
/// it can use per-worker scratch of that call. Bodies must not throw.
/// Thread safety: parallel_for may be called from many threads at once.
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// Returns the number of distinct worker indices.
  virtual int workers() const noexcept = 0;
  /// Calls body(begin, end, worker) for chunks covering [0, n), each at most `grain` long.
  virtual void parallel_for(std::size_t n, std::size_t grain,
                            FunctionRef<void(std::size_t, std::size_t, int)> body) const = 0;
};

/// Creates the backend's scheduler with `threads` workers (0: default_threads()).
Result<std::unique_ptr<Scheduler>> make_scheduler(Backend backend, int threads);

/// Returns the number of CPUs this process may run on (its affinity mask).
int available_cpus() noexcept;

/// Returns ATTN_THREADS when it is set to a number in [1, 1024], else available_cpus().
int default_threads() noexcept;

}  // namespace attn::detail
