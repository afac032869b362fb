// The only file that names MPI: heads split across ranks (attn/distributed.hpp). Each rank
// runs an ordinary Engine over its heads; partial outputs are exchanged with non-blocking
// collectives that every rank waits on with a deadline, and summed in rank order.
#include "attn/distributed.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace attn::dist {
namespace {

Status invalid(std::string message) { return {ErrorCode::kInvalidArgument, std::move(message)}; }

// Copies rows [r0, r0 + n) of a [rows, cols] tensor.
Tensor rows_of(const Tensor& t, std::int64_t r0, std::int64_t n) {
  if (t.empty()) return {};
  const std::int64_t cols = t.shape().rank() == 2 ? t.shape()[1] : 1;
  Tensor out(t.shape().rank() == 2 ? Shape{n, cols} : Shape{n}, t.dtype());
  if (t.dtype() == DType::kF32) {
    std::copy_n(t.data() + r0 * cols, n * cols, out.data());
  } else {
    std::copy_n(t.bits().data() + r0 * cols, n * cols, out.bits().data());
  }
  return out;
}

// Copies columns [c0, c0 + n) of a [rows, cols] tensor (16-bit bits unchanged).
Tensor columns_of(const Tensor& t, std::int64_t c0, std::int64_t n) {
  const std::int64_t rows = t.shape()[0], cols = t.shape()[1];
  Tensor out(Shape{rows, n}, t.dtype());
  auto copy = [&](const auto* src, auto* dst) {
    for (std::int64_t r = 0; r < rows; ++r) std::copy_n(src + r * cols + c0, n, dst + r * n);
  };
  if (t.dtype() == DType::kF32) {
    copy(t.data(), out.data());
  } else {
    copy(t.bits().data(), out.bits().data());
  }
  return out;
}

// What every rank tells the others after its local part of a call.
struct Report {
  int code = 0;
  char message[244] = {};
};

}  // namespace

struct DistributedState {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  LayerConfig config;  // the full layer
  Options options;
  std::optional<Engine> local;  // this rank's heads (set once every rank has created its own)
  bool gather_columns = false;  // the wrapper: ranks own output columns, not partial sums
  std::int64_t local_cols = 0;  // columns of the local engine's output
  mutable std::vector<float> partial, gathered;
  mutable std::vector<Report> reports;
  mutable double exchange_seconds = 0;

  ~DistributedState() {
    if (comm != MPI_COMM_NULL) {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Comm_free(&comm);
    }
  }

  // Waits for `request` until the deadline; false on timeout or error. MPI progresses a
  // transfer only inside MPI calls, so the poll loop keeps calling MPI_Test, yielding the
  // core between polls (a rank still computing may share it) and sleeping 20 us between
  // polls once the wait passes 2 ms (a slow peer: do not burn a core on it).
  bool wait(MPI_Request& request, std::chrono::steady_clock::time_point deadline) const {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      int done = 0;
      if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
      if (done) return true;
      const auto now = std::chrono::steady_clock::now();
      if (now > deadline) return false;
      if (now - start < std::chrono::milliseconds(2)) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
  }

  Status timeout(const char* what) const {
    return {ErrorCode::kUnavailable, "rank " + std::to_string(rank) + ": " + what +
                                         ": no answer from the other ranks within " +
                                         std::to_string(options.timeout_seconds) + " s"};
  }

  // Tells every rank how this rank's local part went; returns the first failure (by rank)
  // on every rank, so that an error is never one rank's alone.
  Status agree(const Status& local_status) const {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(options.timeout_seconds));
    Report mine;
    mine.code = static_cast<int>(local_status.code());
    std::strncpy(mine.message, local_status.message().c_str(), sizeof(mine.message) - 1);
    reports.resize(static_cast<std::size_t>(size));
    MPI_Request request;
    if (MPI_Iallgather(&mine, sizeof(Report), MPI_BYTE, reports.data(), sizeof(Report), MPI_BYTE,
                       comm, &request) != MPI_SUCCESS ||
        !wait(request, deadline)) {
      return timeout("exchanging call status");
    }
    for (int r = 0; r < size; ++r) {
      const Report& rep = reports[static_cast<std::size_t>(r)];
      if (rep.code != 0) {
        return {static_cast<ErrorCode>(rep.code),
                (r == rank ? std::string() : "rank " + std::to_string(r) + ": ") + rep.message};
      }
    }
    return {};
  }

  // Joins the ranks' local outputs (`rows` rows of local_cols floats each, in `partial`) into
  // out [rows, d_out]: the sum in rank order, or the wrapper's columns side by side.
  Status exchange(std::size_t rows, float* out) const {
    const auto t0 = std::chrono::steady_clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                   std::chrono::duration<double>(options.timeout_seconds));
    const std::size_t n = rows * static_cast<std::size_t>(local_cols);
    const bool all = options.output_on_all_ranks;
    if (all || rank == 0) gathered.resize(n * static_cast<std::size_t>(size));
    MPI_Request request;
    const int count = static_cast<int>(n);
    const int rc = all ? MPI_Iallgather(partial.data(), count, MPI_FLOAT, gathered.data(), count,
                                        MPI_FLOAT, comm, &request)
                       : MPI_Igather(partial.data(), count, MPI_FLOAT, gathered.data(), count,
                                     MPI_FLOAT, 0, comm, &request);
    if (rc != MPI_SUCCESS || !wait(request, deadline)) return timeout("exchanging partial outputs");
    if (all || rank == 0) {
      const std::size_t d_out = static_cast<std::size_t>(config.d_out);
      if (gather_columns) {
        const auto cols = static_cast<std::size_t>(local_cols);
        for (int r = 0; r < size; ++r) {
          const float* src = gathered.data() + static_cast<std::size_t>(r) * n;
          for (std::size_t i = 0; i < rows; ++i) {
            std::memcpy(out + i * d_out + static_cast<std::size_t>(r) * cols, src + i * cols,
                        cols * sizeof(float));
          }
        }
      } else {
        // Fixed order: ((p0 + p1) + p2) + ..., the same bits on every rank and every run.
        std::memcpy(out, gathered.data(), n * sizeof(float));
        for (int r = 1; r < size; ++r) {
          const float* src = gathered.data() + static_cast<std::size_t>(r) * n;
          for (std::size_t i = 0; i < n; ++i) out[i] += src[i];
        }
      }
    }
    exchange_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {};
  }

  // Runs `local_call` (which writes `rows` rows into partial), agrees on its status, then
  // exchanges. `out` is the caller's [rows, d_out].
  template <class F>
  Status collective(std::size_t rows, TensorView out, F&& local_call) const {
    Status local_status;
    try {
      partial.resize(rows * static_cast<std::size_t>(local_cols));
      local_status = local_call(partial.data());
    } catch (const std::bad_alloc&) {
      local_status = Status(ErrorCode::kResourceExhausted, "out of memory for the partial output");
    }
    if (Status s = agree(local_status); !s.ok()) return s;
    if (options.output_on_all_ranks || rank == 0) {
      if (out.data == nullptr) return invalid("out has no data");
    }
    return exchange(rows, out.data);
  }
};

Communicator Communicator::world() noexcept {
  return Communicator{static_cast<int>(MPI_Comm_c2f(MPI_COMM_WORLD))};
}

Result<Runtime> Runtime::init(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized)
    return Status(ErrorCode::kUnavailable,
                  "MPI was finalised in this process: it cannot start again");
  if (initialized)
    return Status(ErrorCode::kInvalidArgument, "MPI is already initialised by the program");
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    return Status(ErrorCode::kUnavailable, "MPI_Init_thread failed");
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return Runtime(rank, size);
}

Runtime::Runtime(Runtime&& other) noexcept
    : owns_(other.owns_), rank_(other.rank_), size_(other.size_) {
  other.owns_ = false;
}

Runtime::~Runtime() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Status shard_layer(const LayerConfig& config, const Weights& weights, int rank, int size,
                   LayerConfig& local, Weights& w) {
  if (Status s = validate(config, weights); !s.ok()) return s;
  if (size < 1 || rank < 0 || rank >= size) {
    return invalid("rank " + std::to_string(rank) + " of " + std::to_string(size) + " ranks");
  }
  if (config.variant != Variant::kMultiHeadAttention &&
      config.variant != Variant::kMultiHeadWrapper && size > 1) {
    return invalid(std::string("variant ") + to_string(config.variant) +
                   " has one head: it cannot be split over " + std::to_string(size) + " ranks");
  }
  if (config.num_heads % size != 0 || config.kv_heads() % size != 0) {
    return invalid("num_heads = " + std::to_string(config.num_heads) +
                   " (num_kv_heads = " + std::to_string(config.kv_heads()) +
                   ") is not divisible by the " + std::to_string(size) + " ranks");
  }
  const std::int64_t head_dim = config.resolved_head_dim();
  const std::int64_t q_local = config.q_dim() / size, kv_local = config.kv_dim() / size;
  local = config;
  local.num_heads = config.num_heads / size;
  if (config.variant == Variant::kMultiHeadWrapper) {
    local.d_out = q_local;  // the wrapper outputs its heads: this rank's columns
  } else {
    local.head_dim = head_dim;
    local.num_kv_heads = config.num_kv_heads > 0 ? config.num_kv_heads / size : 0;
  }
  w = Weights{};
  w.w_query = rows_of(weights.w_query, rank * q_local, q_local);
  w.w_key = rows_of(weights.w_key, rank * kv_local, kv_local);
  w.w_value = rows_of(weights.w_value, rank * kv_local, kv_local);
  if (config.qkv_bias) {
    w.b_query = rows_of(weights.b_query, rank * q_local, q_local);
    w.b_key = rows_of(weights.b_key, rank * kv_local, kv_local);
    w.b_value = rows_of(weights.b_value, rank * kv_local, kv_local);
  }
  if (config.has_out_proj()) {
    w.w_out = columns_of(weights.w_out, rank * q_local, q_local);
    if (rank == 0) w.b_out = weights.b_out;  // added once
  }
  return validate(local, w);
}

DistributedEngine::DistributedEngine(std::shared_ptr<DistributedState> state)
    : state_(std::move(state)) {}

Result<DistributedEngine> DistributedEngine::create(Communicator comm, const LayerConfig& config,
                                                    const Weights& weights,
                                                    const Options& options) {
  try {
    MPI_Comm parent = MPI_Comm_f2c(comm.fortran_handle);
    int rank = 0, size = 1;
    if (MPI_Comm_rank(parent, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(parent, &size) != MPI_SUCCESS) {
      return Status(ErrorCode::kInvalidArgument, "the communicator is not valid");
    }
    if (!(options.timeout_seconds > 0)) {
      return Status(
          ErrorCode::kInvalidArgument,
          "timeout_seconds = " + std::to_string(options.timeout_seconds) + " must be > 0");
    }
    // Every rank checks the same config against the same size: the same error everywhere.
    LayerConfig local_config;
    Weights local_weights;
    if (Status s = shard_layer(config, weights, rank, size, local_config, local_weights); !s.ok())
      return s;
    Result<Engine> engine = Engine::create(local_config, local_weights, options.run);
    auto st = std::make_shared<DistributedState>();
    st->rank = rank;
    st->size = size;
    st->config = config;
    st->options = options;
    st->gather_columns = config.variant == Variant::kMultiHeadWrapper;
    st->local_cols = st->gather_columns ? local_config.d_out : config.d_out;
    if (MPI_Comm_dup(parent, &st->comm) != MPI_SUCCESS) {
      return Status(ErrorCode::kUnavailable, "MPI_Comm_dup failed");
    }
    MPI_Comm_set_errhandler(st->comm, MPI_ERRORS_RETURN);
    // A local failure (memory) on one rank fails create on every rank.
    if (Status s = st->agree(engine.ok() ? Status() : engine.status()); !s.ok()) return s;
    st->local.emplace(std::move(engine.value()));
    return DistributedEngine(std::move(st));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kResourceExhausted,
                  "out of memory while creating the distributed engine");
  }
}

Status DistributedEngine::forward(ConstTensorView x, TensorView out) const {
  const DistributedState& st = *state_;
  const Shape& s = x.shape;
  const std::int64_t rows = s.rank() >= 2 && s.numel() > 0 ? s.numel() / s[-1] : 0;
  return st.collective(
      static_cast<std::size_t>(std::max<std::int64_t>(rows, 0)), out, [&](float* partial) {
        const Shape local_shape =
            s.rank() == 3 ? Shape{s[0], s[1], st.local_cols} : Shape{s[0], st.local_cols};
        if (Status e = st.local->forward(x, TensorView{partial, local_shape}); !e.ok()) return e;
        const Shape want =
            s.rank() == 3 ? Shape{s[0], s[1], st.config.d_out} : Shape{s[0], st.config.d_out};
        if ((st.options.output_on_all_ranks || st.rank == 0) && !(out.shape == want)) {
          return invalid("out has shape " + out.shape.to_string() + ", expected " +
                         want.to_string());
        }
        return Status();
      });
}

Result<DistributedSession> DistributedEngine::new_session() const {
  Result<Session> local = state_->local->new_session();
  if (Status s = state_->agree(local.ok() ? Status() : local.status()); !s.ok()) return s;
  return DistributedSession(state_, std::move(local.value()));
}

namespace {

// The batched step of DistributedEngine::step and DistributedSession::step.
Status step_sessions(const DistributedState& st, std::span<DistributedSession* const> sessions,
                     ConstTensorView x, TensorView out) {
  return st.collective(sessions.size(), out, [&](float* partial) {
    std::vector<Session*> local(sessions.size());
    for (std::size_t i = 0; i < sessions.size(); ++i) {
      if (sessions[i] == nullptr) return invalid("step: session " + std::to_string(i) + " is null");
      local[i] = &sessions[i]->local();
    }
    const auto n = static_cast<std::int64_t>(sessions.size());
    if (Status e = st.local->step(local, x, TensorView{partial, Shape{n, st.local_cols}}); !e.ok())
      return e;
    return out.shape == Shape{n, st.config.d_out} ||
                   !(st.options.output_on_all_ranks || st.rank == 0)
               ? Status()
               : invalid("out has shape " + out.shape.to_string() + ", expected [" +
                         std::to_string(n) + ", " + std::to_string(st.config.d_out) + "]");
  });
}

}  // namespace

Status DistributedEngine::step(std::span<DistributedSession* const> sessions, ConstTensorView x,
                               TensorView out) const {
  return step_sessions(*state_, sessions, x, out);
}

Status DistributedSession::prefill(ConstTensorView x, TensorView out) {
  const DistributedState& st = *state_;
  const std::int64_t rows = x.shape.rank() == 2 ? x.shape[0] : 0;
  return st.collective(
      static_cast<std::size_t>(std::max<std::int64_t>(rows, 0)), out, [&](float* partial) {
        if (Status e = local_.prefill(x, TensorView{partial, Shape{rows, st.local_cols}}); !e.ok())
          return e;
        return out.shape == Shape{rows, st.config.d_out} ||
                       !(st.options.output_on_all_ranks || st.rank == 0)
                   ? Status()
                   : invalid("prefill: out has shape " + out.shape.to_string() + ", expected [" +
                             std::to_string(rows) + ", " + std::to_string(st.config.d_out) + "]");
      });
}

Status DistributedSession::step(ConstTensorView x, TensorView out) {
  DistributedSession* self = this;
  return step_sessions(*state_, std::span<DistributedSession* const>(&self, 1), x, out);
}

int DistributedEngine::rank() const noexcept { return state_->rank; }
int DistributedEngine::size() const noexcept { return state_->size; }
const LayerConfig& DistributedEngine::config() const noexcept { return state_->config; }
const Engine& DistributedEngine::local_engine() const noexcept { return *state_->local; }
double DistributedEngine::last_exchange_seconds() const noexcept {
  return state_->exchange_seconds;
}

}  // namespace attn::dist
