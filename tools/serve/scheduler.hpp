// Continuous batching for attn serve: admitted requests become (session, tokens) items, and
// one scheduler thread merges the items of every request into engine batches under a token
// budget. Uses only the public API.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "attn/cache_pool.hpp"
#include "attn/engine.hpp"
#include "metrics.hpp"
#include "protocol.hpp"

namespace attn::serve {

/// One entry of a batch: `tokens` new tokens of one sequence.
/// x: [tokens, d_in] -> out: [tokens, d_out]. session == nullptr: a stateless request on a
/// model without sessions (not causal), run as one forward.
struct BatchItem {
  Session* session = nullptr;
  const float* x = nullptr;
  float* out = nullptr;
  std::int64_t tokens = 0;
  bool reset_first = false;  ///< forget the session's cache before appending (sequence_start)
};

/// Runs one batch: appends every item's tokens to its session (sessions are distinct) and
/// writes their outputs. A failure fails the whole batch.
class BatchRunner {
 public:
  virtual ~BatchRunner() = default;
  virtual Status run(std::span<const BatchItem> items) = 0;
};

/// The runner on the public API: every item with a session (prompt chunks and one-token decode
/// steps alike) in one ragged Engine::advance call, all-or-nothing; items without a session
/// (a layer that is not causal) each by one Engine::forward.
class EngineBatchRunner final : public BatchRunner {
 public:
  explicit EngineBatchRunner(Engine engine);
  Status run(std::span<const BatchItem> items) override;

 private:
  Engine engine_;
  std::vector<Session*> sessions_;
  std::vector<std::int64_t> tokens_;
  std::vector<float> x_, out_;
};

/// The scheduler's limits (the serve flags of the same names).
struct SchedulerLimits {
  std::int64_t max_batch_tokens = 512;  ///< tokens per engine batch
  std::int64_t max_sequences = 64;      ///< live stateful sequences
  std::int64_t max_queue = 64;          ///< infer requests admitted and not yet answered
  std::int64_t max_cache_bytes = 0;     ///< the KV-cache pool's budget; 0: see the Scheduler
  double sequence_timeout_s = 60;       ///< idle sequences are dropped after this
};

/// What an infer request got: status 200 and y [tokens, d_out], or an HTTP status and message.
struct InferOutcome {
  int status = 200;
  std::string error;
  std::vector<float> y;
};

/// The batching scheduler.
/// Policy: each round takes the one-token (decode) items first, oldest first, up to 3/4 of
/// --max-batch-tokens when prompts wait (all of it otherwise), then gives what is left to
/// prompts in arrival order, cut into chunks that fit: a long prompt advances by a chunk per
/// round while decodes keep running, and decodes can never take the prompts' quarter.
/// Thread safety: infer() may run from many threads at once; start/drain from one.
class Scheduler {
 public:
  /// max_cache_bytes 0 becomes (max_sequences + 16) full-context sessions' worth. Every
  /// session takes its blocks from one CachePool of that budget; a request is admitted only
  /// when the blocks its tokens will need (positions rounded up to the pool's blocks) are free
  /// of every other admitted request's reservation, so an engine call never runs the pool dry.
  Scheduler(Engine engine, std::unique_ptr<BatchRunner> runner, SchedulerLimits limits,
            Metrics& metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Starts the scheduler thread; fails when the engine cannot create a probe session for a
  /// causal layer.
  Status start();
  /// Runs a decoded request to completion, blocking the caller. Fast refusals: 503 when the
  /// queue is full or the server is stopping, 429 when sequences or cache bytes run out.
  /// Never throws.
  InferOutcome infer(const InferRequest& request) noexcept;
  /// Refuses new requests, finishes every admitted one, then stops the thread.
  void drain();
  /// Returns the gauges for /metrics.
  Metrics::Live live() const;
  /// True when sequences are supported (a causal layer).
  bool stateful() const { return session_bytes_ > 0; }

 private:
  struct Sequence;
  struct Pending;
  struct Item;
  using Clock = std::chrono::steady_clock;

  void loop();
  // Under mu_: picks the next batch from queue_; empty when nothing can run.
  void pick(std::vector<Item*>& picked, std::vector<std::int64_t>& chunks);
  std::unique_ptr<Session> take_scratch();
  void return_scratch(std::unique_ptr<Session> s);
  void expire(Clock::time_point now);
  void finish_item(Item* item, int status, const std::string& error);

  Engine engine_;
  std::unique_ptr<BatchRunner> runner_;
  SchedulerLimits limits_;
  Metrics& metrics_;
  std::int64_t d_in_ = 0, d_out_ = 0;
  std::int64_t session_bytes_ = 0;  // 0: the layer has no sessions (not causal)
  std::optional<CachePool> pool_;   // every session's blocks
  std::int64_t block_positions_ = 0, total_blocks_ = 0;
  std::int64_t reserved_blocks_ = 0;  // blocks promised to admitted sequences and requests
  std::int64_t blocks_of(std::int64_t positions) const {
    return (positions + block_positions_ - 1) / block_positions_;
  }

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Item*> queue_;
  std::unordered_map<std::string, std::shared_ptr<Sequence>> sequences_;
  std::vector<std::unique_ptr<Session>> free_scratch_;
  std::int64_t sessions_held_ = 0;  // sequences (live or finishing) + scratch sessions
  std::int64_t admitted_ = 0;
  std::int64_t queued_tokens_ = 0;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace attn::serve
