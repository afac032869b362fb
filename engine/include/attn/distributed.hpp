// Attention heads split across processes with MPI (tensor parallelism by heads), in the
// separate library attn_distributed: the single-machine libattn has no MPI dependency.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "attn/config.hpp"
#include "attn/engine.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"

namespace attn::dist {

/// An MPI communicator, passed as its Fortran handle (`MPI_Comm_c2f(comm)` in the caller's
/// code) so that this header needs no mpi.h. attn duplicates it (MPI_Comm_dup) and never
/// changes the caller's communicator or calls MPI_Init behind the caller's back.
struct Communicator {
  int fortran_handle = 0;
  /// Returns MPI_COMM_WORLD.
  ATTN_API static Communicator world() noexcept;
};

/// MPI_Init_thread / MPI_Finalize for a program that has not initialised MPI itself (the
/// `attn` command line). Thread safety: create once, on the main thread.
class ATTN_API Runtime {
 public:
  /// Initialises MPI (MPI_THREAD_FUNNELED; argc/argv may be null); fails if it cannot, or if MPI is
  /// already initialised (then the caller owns it: use Communicator::world() directly).
  static Result<Runtime> init(int* argc, char*** argv);
  Runtime(Runtime&& other) noexcept;
  Runtime& operator=(Runtime&&) = delete;
  ~Runtime();  ///< MPI_Finalize
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }

 private:
  Runtime(int rank, int size) : rank_(rank), size_(size) {}
  bool owns_ = true;
  int rank_ = 0, size_ = 1;
};

/// How a distributed engine runs.
struct Options {
  RunOptions run;                   ///< this process's engine (threads, backend, isa, ...)
  bool output_on_all_ranks = true;  ///< false: only rank 0's `out` is written
  double timeout_seconds = 60;      ///< a rank that waits this long for the others fails
                                    ///< with kUnavailable instead of hanging
};

class DistributedSession;
struct DistributedState;

/// One attention layer whose heads are split over the P ranks of a communicator: rank r owns
/// query heads [r H/P, (r+1) H/P) (and kv heads [r K/P, (r+1) K/P) with grouped-query
/// attention): their rows of W_query, W_key, W_value and columns of W_out; the output bias
/// is added once (by rank 0). Every rank projects and attends for its heads and computes its
/// partial output projection; the partials are summed in rank order (0, 1, ..., P-1) on
/// every rank, whatever the MPI library's reduction order, so with P fixed the output bits
/// are the same from run to run. The wrapper variant (no output projection) gathers each
/// rank's head columns instead. Single-process results agree within float rounding of the
/// summation order (tests bound it at 1e-5 + 1e-5 |ref|).
///
/// Every call is collective: all ranks call it with the same shapes (x and out are full on
/// every rank). An error on any rank (a bad shape, memory) is returned on every rank; no call
/// hangs: a rank that does not answer within Options::timeout_seconds gives kUnavailable.
/// Thread safety: calls on one engine are collective and must be made in the same order on
/// every rank (one caller thread per rank).
class ATTN_API DistributedEngine {
 public:
  /// Validates `config` (num_heads and num_kv_heads divisible by the number of ranks; the
  /// same error on every rank), takes this rank's slice of `weights` (the full layer's, as
  /// every rank reads them from the same file) and creates the local engine.
  static Result<DistributedEngine> create(Communicator comm, const LayerConfig& config,
                                          const Weights& weights, const Options& options = {});

  /// x: [batch, seq_len, d_in] or [seq_len, d_in] (full, on every rank) -> out (same rank,
  /// last dim d_out): written on every rank, or on rank 0 only.
  Status forward(ConstTensorView x, TensorView out) const;
  /// Creates a session on every rank; each caches its own heads' keys and values.
  Result<DistributedSession> new_session() const;
  /// Advances every session by one token (row i of x for sessions[i]), as Engine::step.
  Status step(std::span<DistributedSession* const> sessions, ConstTensorView x,
              TensorView out) const;

  int rank() const noexcept;
  int size() const noexcept;
  /// Returns the full layer's config.
  const LayerConfig& config() const noexcept;
  /// Returns this rank's engine (its heads only).
  const Engine& local_engine() const noexcept;
  /// Returns the seconds the last call spent exchanging partial outputs (for benchmarks).
  double last_exchange_seconds() const noexcept;

 private:
  friend class DistributedSession;
  explicit DistributedEngine(std::shared_ptr<DistributedState> state);
  std::shared_ptr<DistributedState> state_;
};

/// A KV-cache session sharded by heads: this rank's Session plus the engine to exchange with.
class ATTN_API DistributedSession {
 public:
  /// Appends a prompt, as Session::prefill (collective).
  Status prefill(ConstTensorView x, TensorView out);
  /// Appends one token, as Session::step (collective).
  Status step(ConstTensorView x, TensorView out);
  std::int64_t position() const noexcept { return local_.position(); }
  Session& local() noexcept { return local_; }

 private:
  friend class DistributedEngine;
  DistributedSession(std::shared_ptr<DistributedState> state, Session local)
      : state_(std::move(state)), local_(std::move(local)) {}
  std::shared_ptr<DistributedState> state_;
  Session local_;
};

/// Returns rank `rank` of `size`'s slice of a layer: config with num_heads / size heads and
/// weights with their rows of W_query/W_key/W_value and columns of W_out (b_out on rank 0
/// only), each in its dtype (16-bit weights stay 16-bit). Fails (naming the values) when the
/// heads do not divide by `size` or the variant has no heads to split. Exposed for tests and
/// tools; DistributedEngine::create uses it.
ATTN_API Status shard_layer(const LayerConfig& config, const Weights& weights, int rank, int size,
                            LayerConfig& local_config, Weights& local_weights);

}  // namespace attn::dist
