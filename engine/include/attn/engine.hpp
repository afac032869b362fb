// The attention engine: weights packed once, forward passes and KV-cache sessions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "attn/cache_pool.hpp"
#include "attn/config.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"

namespace attn {

class Session;
struct EngineState;
struct SessionState;

/// Which attention path forward() runs.
enum class AttentionImpl {
  kFused,    ///< flash attention: online softmax, no [seq_len, seq_len] buffer (default)
  kUnfused,  ///< scores materialised per head, softmax, then P·V; for comparison. Grows the
             ///< workspace by [seq_len, seq_len] floats per worker. Like the chapter's code it
             ///< multiplies masked (zero) weights by V, so NaN/Inf in a future value reaches
             ///< earlier rows as 0 * NaN; the fused path never reads masked values.
};

/// Work of one call, for rates: FLOPs (2 per multiply-add; attention counts visible pairs
/// only) and the bytes of inputs, weights and outputs touched at least once.
struct Cost {
  double flops = 0;
  double attention_flops = 0;
  double projection_flops = 0;
  double bytes = 0;
};

/// Where a decode step spent its time, for profiling servers (optional output of step()).
struct StepStats {
  std::int64_t projection_ns = 0;  ///< QKV and output projections
  std::int64_t attention_ns = 0;   ///< cache append, attention over the cache, merge
  double cache_bytes_read = 0;     ///< keys and values read by the attention part
};

/// Multi-head attention with its weights packed for the chosen instruction set.
///
/// Embedding contract:
/// - immutable after create(); forward() and step() may run from many threads at once;
/// - no global state: two engines share nothing;
/// - no heap allocation in steady state: per-call buffers come from a pool owned by the
///   engine, grown the first time a larger call arrives and reused afterwards;
/// - never prints, never aborts, never throws: every failure is a Status;
/// - the same input gives the same output bits for any thread count and any backend.
/// Copying an Engine is cheap: copies share the packed weights and the thread pool.
class ATTN_API Engine {
 public:
  /// Validates `config`, `weights` and `options` (errors name the field or tensor and the
  /// values), packs the weights and creates the thread arena.
  static Result<Engine> create(const LayerConfig& config, const Weights& weights,
                               const RunOptions& options = {});

  /// x: [batch, seq_len, d_in] or [seq_len, d_in] -> out: same rank, last dim d_out.
  /// Fails, with `out` untouched, when a shape is wrong, seq_len > context_length, a size is
  /// zero, or memory cannot be allocated.
  Status forward(ConstTensorView x, TensorView out,
                 AttentionImpl impl = AttentionImpl::kFused) const;

  /// Creates a KV-cache session of capacity context_length (see Session) with a private
  /// CachePool of context_length positions (rounded up to whole blocks). Fails for a
  /// non-causal engine, or when the cache cannot be allocated.
  Result<Session> new_session() const;

  /// Creates an empty KV-cache session whose blocks come from `pool` as it grows (it holds
  /// none until its first call). Fails for a non-causal engine or a pool made for another
  /// cache shape (kv heads, head_dim; both named).
  Result<Session> new_session(CachePool& pool) const;

  /// Advances every session by one token: x: [n, d_in] (row i for sessions[i]) ->
  /// out: [n, d_out]. Sessions must belong to this engine, be distinct and not full; on any
  /// error no session changes. Work is split over (session, head, chunk of the cache), so
  /// the result does not depend on the thread count. `stats` (optional) receives timings.
  Status step(std::span<Session* const> sessions, ConstTensorView x, TensorView out,
              StepStats* stats = nullptr) const;

  /// Advances each session by its own number of tokens in one call (a ragged batch, for
  /// continuous batching): sessions[i] takes new_tokens[i] >= 1 rows of x, the rows of all
  /// sessions concatenated in order. x: [sum(new_tokens), d_in] -> out: [sum, d_out].
  /// A session with one new token attends like step(), one with more like prefill(); the
  /// outputs are bit-identical to advancing each session alone that way, for any thread count
  /// and backend. Sessions must belong to this engine, be distinct and have room
  /// (position + new_tokens <= context_length). On any error, pool exhaustion included
  /// (kResourceExhausted naming the pool size, bytes in use and bytes asked), no session
  /// changes. Work runs over (session, head, query block or cache chunk) tasks in one pass.
  Status advance(std::span<Session* const> sessions, std::span<const std::int64_t> new_tokens,
                 ConstTensorView x, TensorView out, StepStats* stats = nullptr) const;

  /// Returns what the layer is.
  const LayerConfig& config() const noexcept;
  /// Returns how the engine runs, as given to create() (threads() says how many run).
  const RunOptions& options() const noexcept;
  /// Returns the instruction set the kernels run: "sse2", "avx2" or "avx512".
  const char* isa() const noexcept;
  /// Returns the number of worker threads forward() may use.
  int threads() const noexcept;
  /// Returns the work of forward() on [batch, seq_len, d_in].
  Cost forward_cost(std::int64_t batch, std::int64_t seq_len) const noexcept;
  /// Returns the bytes of packed weights the engine holds.
  std::size_t weight_bytes() const noexcept;

 private:
  friend class Session;
  friend class CachePool;
  explicit Engine(std::shared_ptr<const EngineState> state);
  Result<Session> make_session(std::shared_ptr<CachePoolState> pool, bool private_pool) const;
  // The batched step of Engine::step and Session::step.
  static Status step_sessions(const EngineState& st, std::span<Session* const> sessions,
                              ConstTensorView x, TensorView out, StepStats* stats);
  std::shared_ptr<const EngineState> state_;
};

/// Incremental decoding for one sequence: keys and values of every past position are cached
/// in blocks of a CachePool (CachePool::block_positions() positions each, taken as the session
/// grows; Engine::new_session() gives the session a private pool of context_length
/// positions), so a new token costs one query against the cache instead of a forward over the
/// whole prefix. The kernels read the cache through the session's block table. The causal mask
/// aligns bottom-right: a new token sees every cached position and itself (the last `window`
/// positions when LayerConfig::window > 0). Appending past context_length is an error.
/// Thread safety: one session is used by one thread at a time, except that fork() only reads
/// the session and may run from several threads at once while nothing advances it;
/// different sessions (of one engine, of one pool, forks of each other) may run concurrently.
class ATTN_API Session {
 public:
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  /// Appends a prompt. x: [seq_len, d_in] -> out: [seq_len, d_out] (the outputs a full
  /// causal forward would give at those positions). Fails without changing the session when
  /// position() + seq_len > context_length.
  Status prefill(ConstTensorView x, TensorView out);
  /// Appends one token. x: [1, d_in] -> out: [1, d_out]. Fails without changing the
  /// session when it is full.
  Status step(ConstTensorView x, TensorView out, StepStats* stats = nullptr);
  /// Forgets every cached position and returns the session's blocks to its pool.
  void reset() noexcept;
  /// Returns the session's blocks to its pool (position becomes 0); the same as reset().
  void release() noexcept;
  /// Returns a new session with this one's positions: it shares this session's full blocks
  /// copy-on-write (they are never written again; a block shared is counted once in the
  /// pool) and gets a copy of the partly filled last block, so each can grow on its own.
  /// Outputs of either are identical to those of an unshared copy. Fails (kResourceExhausted,
  /// nothing changed) when the pool has no block for the copy or memory runs out.
  Result<Session> fork() const;
  /// Returns how many positions are cached.
  std::int64_t position() const noexcept;
  /// Returns context_length: the most positions the session can hold.
  std::int64_t capacity() const noexcept;
  /// Returns the key and value bytes set aside for this session: with a private pool (from
  /// new_session()) the pool's capacity, 2 * kv_dim * 4 bytes per position (f32; see
  /// CachePool::block_bytes for the other kv dtypes) for
  /// context_length rounded up to whole blocks; with a shared pool the bytes of the blocks
  /// the session holds (blocks shared with a fork counted in full).
  std::size_t cache_bytes() const noexcept;

 private:
  friend class Engine;
  explicit Session(std::unique_ptr<SessionState> state);
  std::unique_ptr<SessionState> state_;
};

}  // namespace attn
