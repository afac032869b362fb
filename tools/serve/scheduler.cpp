// The batching scheduler of attn serve and its engine runner (see scheduler.hpp for the policy).
#include "scheduler.hpp"

#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace attn::serve {

// ---- EngineBatchRunner ----------------------------------------------------------------------

EngineBatchRunner::EngineBatchRunner(Engine engine) : engine_(std::move(engine)) {}

Status EngineBatchRunner::run(std::span<const BatchItem> items) {
  const std::int64_t d_in = engine_.config().d_in, d_out = engine_.config().d_out;
  sessions_.clear();
  tokens_.clear();
  std::int64_t rows = 0;
  for (const BatchItem& it : items) {
    if (it.session == nullptr) continue;
    if (it.reset_first) it.session->reset();
    sessions_.push_back(it.session);
    tokens_.push_back(it.tokens);
    rows += it.tokens;
  }
  if (!sessions_.empty()) {
    // The items' rows live in their requests' buffers: gather them for the one call.
    x_.resize(static_cast<std::size_t>(rows * d_in));
    out_.resize(static_cast<std::size_t>(rows * d_out));
    std::int64_t row = 0;
    for (const BatchItem& it : items) {
      if (it.session == nullptr) continue;
      std::memcpy(x_.data() + row * d_in, it.x, sizeof(float) * it.tokens * d_in);
      row += it.tokens;
    }
    if (Status s =
            engine_.advance(sessions_, tokens_, ConstTensorView(x_.data(), Shape{rows, d_in}),
                            TensorView{out_.data(), Shape{rows, d_out}});
        !s.ok()) {
      return s;
    }
    row = 0;
    for (const BatchItem& it : items) {
      if (it.session == nullptr) continue;
      std::memcpy(it.out, out_.data() + row * d_out, sizeof(float) * it.tokens * d_out);
      row += it.tokens;
    }
  }
  for (const BatchItem& it : items) {
    if (it.session != nullptr) continue;
    const ConstTensorView x(it.x, Shape{it.tokens, d_in});
    const TensorView out{it.out, Shape{it.tokens, d_out}};
    if (Status s = engine_.forward(x, out); !s.ok()) return s;
  }
  return {};
}

// ---- Scheduler ------------------------------------------------------------------------------

namespace {
// Scratch sessions kept for stateless requests between bursts; more are freed after use.
constexpr std::size_t kMaxFreeScratch = 8;
}  // namespace

struct Scheduler::Sequence {
  std::unique_ptr<Session> session;
  std::int64_t reserved = 0;         // positions after every admitted request of this sequence
  std::int64_t reserved_blocks = 0;  // pool blocks promised to it (see infer)
  Clock::time_point last_used;
  int pending = 0;       // admitted requests not yet answered
  bool dropped = false;  // removed from sequences_ (ended, expired or failed)
};

struct Scheduler::Pending {
  std::condition_variable done;
  int items_left = 0;
  bool finished = false;
  int status = 200;
  std::string error;
};

struct Scheduler::Item {
  Pending* owner = nullptr;
  std::shared_ptr<Sequence> sequence;  // null: stateless
  std::unique_ptr<Session> scratch;    // stateless on a causal layer: taken when first run
  std::int64_t scratch_blocks = 0;     // pool blocks reserved for `scratch`
  const float* x = nullptr;
  float* out = nullptr;
  std::int64_t tokens = 0;
  std::int64_t done = 0;
  bool reset_first = false;

  Session* session() const { return sequence ? sequence->session.get() : scratch.get(); }
};

Scheduler::Scheduler(Engine engine, std::unique_ptr<BatchRunner> runner, SchedulerLimits limits,
                     Metrics& metrics)
    : engine_(std::move(engine)), runner_(std::move(runner)), limits_(limits), metrics_(metrics) {
  d_in_ = engine_.config().d_in;
  d_out_ = engine_.config().d_out;
}

Scheduler::~Scheduler() { drain(); }

Status Scheduler::start() {
  if (engine_.config().causal()) {
    Result<Session> probe = engine_.new_session();
    if (!probe.ok()) return probe.status();
    session_bytes_ = static_cast<std::int64_t>(probe->cache_bytes());
    if (limits_.max_cache_bytes <= 0) {
      limits_.max_cache_bytes = (limits_.max_sequences + 16) * session_bytes_;
    }
    probe->release();
    Result<CachePool> pool =
        CachePool::create(engine_, static_cast<std::size_t>(limits_.max_cache_bytes));
    if (!pool.ok()) {
      return Status(pool.status().code(), "--max-cache-bytes " +
                                              std::to_string(limits_.max_cache_bytes) + ": " +
                                              pool.status().message());
    }
    pool_.emplace(std::move(pool.value()));
    block_positions_ = pool_->block_positions();
    total_blocks_ = static_cast<std::int64_t>(pool_->capacity_bytes() / pool_->block_bytes());
  }
  started_ = true;
  thread_ = std::thread([this] { loop(); });
  return {};
}

Metrics::Live Scheduler::live() const {
  std::lock_guard<std::mutex> lock(mu_);
  Metrics::Live l;
  l.sequences = static_cast<std::int64_t>(sequences_.size());
  l.pool_used_bytes = pool_ ? static_cast<std::int64_t>(pool_->used_bytes()) : 0;
  l.pool_capacity_bytes = pool_ ? static_cast<std::int64_t>(pool_->capacity_bytes()) : 0;
  l.queue_depth = admitted_;
  l.queued_tokens = queued_tokens_;
  return l;
}

InferOutcome Scheduler::infer(const InferRequest& req) noexcept {
  InferOutcome res;
  try {
    const std::int64_t tokens = req.tokens();
    res.y.resize(static_cast<std::size_t>(tokens * d_out_));
    Pending pending;
    // Everything that may throw is allocated before the lock: once a sequence is touched or an
    // item queued, nothing below throws until the answer.
    std::vector<Item> items(static_cast<std::size_t>(req.batch));
    std::string key = req.sequence ? req.sequence->key() : std::string();
    std::shared_ptr<Sequence> seq;
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_ || !started_) return {503, "the server is shutting down", {}};
    if (admitted_ >= limits_.max_queue) {
      return {503,
              "the server is full: " + std::to_string(admitted_) + " requests queued (--max-queue)",
              {}};
    }
    bool reset = false;
    // The pool's blocks this request needs beyond what is reserved already (see Scheduler).
    auto pool_full = [&](std::int64_t need) -> InferOutcome {
      return {429,
              "the KV-cache pool is full: " + std::to_string(reserved_blocks_) + " of " +
                  std::to_string(total_blocks_) + " blocks of " + std::to_string(block_positions_) +
                  " positions are reserved and this "
                  "request needs " +
                  std::to_string(need) + " more (--max-cache-bytes)",
              {}};
    };
    // A stateless request's sequences take their blocks one scratch session at a time when
    // they run (pick); refused only when one of them could never fit.
    if (!req.sequence && stateful() && blocks_of(req.seq_len) > total_blocks_) {
      return pool_full(blocks_of(req.seq_len));
    }
    if (req.sequence) {
      if (!stateful()) return {400, "this model is not causal: it has no sequences", {}};
      const auto it = sequences_.find(key);
      if (it == sequences_.end()) {
        if (!req.sequence_start) {
          return {400, "unknown sequence_id (start a sequence with sequence_start: true)", {}};
        }
        if (static_cast<std::int64_t>(sequences_.size()) >= limits_.max_sequences) {
          return {429,
                  "too many live sequences (--max-sequences " +
                      std::to_string(limits_.max_sequences) + ")",
                  {}};
        }
        if (tokens > engine_.config().context_length) {
          return {400,
                  "the sequence would hold " + std::to_string(tokens) +
                      " tokens, over context_length " +
                      std::to_string(engine_.config().context_length),
                  {}};
        }
        if (reserved_blocks_ + blocks_of(tokens) > total_blocks_) {
          return pool_full(blocks_of(tokens));
        }
        seq = std::make_shared<Sequence>();
        seq->session = take_scratch();  // counted in sessions_held_ by take_scratch
        if (!seq->session) return {503, "could not allocate a KV cache", {}};
        sequences_.emplace(key, seq);
      } else {
        seq = it->second;
        reset = req.sequence_start;
      }
      const std::int64_t base = reset ? 0 : seq->reserved;
      if (base + tokens > engine_.config().context_length) {
        return {400,
                "the sequence would hold " + std::to_string(base + tokens) +
                    " tokens, over context_length " +
                    std::to_string(engine_.config().context_length),
                {}};
      }
      // A sequence keeps the most blocks it was ever promised until it is dropped (a restart
      // frees its blocks only when its reset runs, after its earlier requests).
      const std::int64_t need =
          std::max<std::int64_t>(0, blocks_of(base + tokens) - seq->reserved_blocks);
      if (reserved_blocks_ + need > total_blocks_) return pool_full(need);
      reserved_blocks_ += need;
      seq->reserved_blocks += need;
      seq->reserved = base + tokens;
      seq->pending += 1;
      seq->last_used = Clock::now();
    }
    for (std::int64_t b = 0; b < req.batch; ++b) {
      Item& item = items[static_cast<std::size_t>(b)];
      item.owner = &pending;
      item.sequence = seq;
      item.x = req.x.data() + b * req.seq_len * d_in_;
      item.out = res.y.data() + b * req.seq_len * d_out_;
      item.tokens = req.seq_len;
      item.reset_first = reset;
    }
    pending.items_left = static_cast<int>(items.size());
    for (Item& item : items) queue_.push_back(&item);
    ++admitted_;
    queued_tokens_ += tokens;
    wake_.notify_one();
    pending.done.wait(lock, [&] { return pending.finished; });
    --admitted_;
    if (seq) {
      seq->pending -= 1;
      seq->last_used = Clock::now();
      const bool drop = pending.status != 200 || req.sequence_end;
      if (drop && !seq->dropped) {
        seq->dropped = true;
        const auto it = sequences_.find(key);
        if (it != sequences_.end() && it->second == seq) sequences_.erase(it);
      }
      if (seq->dropped && seq->pending == 0 && seq->session) {
        seq->session.reset();  // its blocks go back to the pool
        --sessions_held_;
        reserved_blocks_ -= seq->reserved_blocks;
        seq->reserved_blocks = 0;
      }
    }
    res.status = pending.status;
    res.error = pending.error;
    if (res.status != 200) res.y.clear();
    return res;
  } catch (const std::bad_alloc&) {
    return {503, "out of memory", {}};
  } catch (const std::exception& e) {
    return {500, std::string("internal error: ") + e.what(), {}};
  }
}

std::unique_ptr<Session> Scheduler::take_scratch() {
  if (!free_scratch_.empty()) {
    std::unique_ptr<Session> s = std::move(free_scratch_.back());
    free_scratch_.pop_back();
    s->reset();
    return s;
  }
  Result<Session> s = engine_.new_session(*pool_);
  if (!s.ok()) return nullptr;
  ++sessions_held_;
  return std::make_unique<Session>(std::move(s.value()));
}

void Scheduler::return_scratch(std::unique_ptr<Session> s) {
  if (!s) return;
  s->release();  // its blocks go back to the pool now
  if (free_scratch_.size() < kMaxFreeScratch) {
    free_scratch_.push_back(std::move(s));
  } else {
    s.reset();
    --sessions_held_;
  }
}

void Scheduler::expire(Clock::time_point now) {
  const auto timeout = std::chrono::duration<double>(limits_.sequence_timeout_s);
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    Sequence& s = *it->second;
    if (s.pending == 0 && now - s.last_used > timeout) {
      s.dropped = true;
      s.session.reset();
      --sessions_held_;
      reserved_blocks_ -= s.reserved_blocks;
      s.reserved_blocks = 0;
      metrics_.expired_sequences.fetch_add(1);
      it = sequences_.erase(it);
    } else {
      ++it;
    }
  }
}

void Scheduler::pick(std::vector<Item*>& picked, std::vector<std::int64_t>& chunks) {
  const std::int64_t budget = limits_.max_batch_tokens;
  bool prompts_wait = false;
  for (const Item* it : queue_) prompts_wait |= it->tokens - it->done > 1;
  const std::int64_t decode_cap =
      prompts_wait ? std::max<std::int64_t>(1, budget - budget / 4) : budget;
  std::int64_t used = 0;
  std::vector<const Sequence*> seen;
  auto first_of_sequence = [&seen](const Item* it) {
    if (!it->sequence) return true;
    if (std::find(seen.begin(), seen.end(), it->sequence.get()) != seen.end()) return false;
    seen.push_back(it->sequence.get());
    return true;
  };
  auto has_session = [this](Item* it) {
    if (it->sequence || !stateful() || it->scratch) return true;
    const std::int64_t need = blocks_of(it->tokens);
    if (reserved_blocks_ + need > total_blocks_) return false;  // waits for blocks
    it->scratch = take_scratch();
    if (!it->scratch) return false;
    reserved_blocks_ += need;
    it->scratch_blocks = need;
    return true;
  };
  // Decodes first, oldest first, up to decode_cap.
  for (Item* it : queue_) {
    if (!first_of_sequence(it)) continue;  // a sequence's requests run in arrival order
    if (it->tokens - it->done != 1 || used >= decode_cap) continue;
    if (!has_session(it)) continue;
    picked.push_back(it);
    chunks.push_back(1);
    ++used;
  }
  // Then prompts, in arrival order, in chunks of what is left.
  seen.clear();
  const std::size_t decodes = picked.size();
  for (Item* it : queue_) {
    if (used >= budget) break;
    if (!first_of_sequence(it)) continue;
    if (it->tokens - it->done <= 1) continue;
    if (std::find(picked.begin(), picked.begin() + static_cast<std::ptrdiff_t>(decodes), it) !=
        picked.begin() + static_cast<std::ptrdiff_t>(decodes)) {
      continue;
    }
    if (!has_session(it)) continue;
    std::int64_t chunk = std::min(it->tokens - it->done, budget - used);
    if (!stateful()) {
      // Without a session a sequence cannot be cut: it runs whole, alone if over the budget.
      if (it->tokens > budget - used && used > 0) continue;
      chunk = it->tokens;
    }
    picked.push_back(it);
    chunks.push_back(chunk);
    used += chunk;
  }
}

void Scheduler::finish_item(Item* item, int status, const std::string& error) {
  return_scratch(std::move(item->scratch));
  reserved_blocks_ -= item->scratch_blocks;
  item->scratch_blocks = 0;
  Pending* p = item->owner;
  if (status != 200 && p->status == 200) {
    p->status = status;
    p->error = error;
  }
  queued_tokens_ -= item->tokens - item->done;
  if (--p->items_left == 0) {
    p->finished = true;
    p->done.notify_one();
  }
}

void Scheduler::loop() {
  std::vector<Item*> picked;
  std::vector<std::int64_t> chunks;
  std::vector<BatchItem> batch;
  auto last_trim = Clock::now();
  bool freed = false;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    picked.clear();
    chunks.clear();
    const auto now = Clock::now();
    const std::int64_t held = sessions_held_;
    expire(now);
    pick(picked, chunks);
    freed |= sessions_held_ < held;
    if (picked.empty()) {
      if (stopping_ && queue_.empty()) break;
      // Idle: give freed KV caches back to the system now and then (glibc keeps them).
      if (freed && queue_.empty() && now - last_trim > std::chrono::seconds(1)) {
        malloc_trim(0);
        last_trim = now;
        freed = false;
      }
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      continue;
    }
    batch.clear();
    std::int64_t tokens = 0, decode = 0;
    for (std::size_t i = 0; i < picked.size(); ++i) {
      Item* it = picked[i];
      BatchItem b;
      b.session = it->session();
      b.x = it->x + it->done * d_in_;
      b.out = it->out + it->done * d_out_;
      b.tokens = chunks[i];
      b.reset_first = it->reset_first && it->done == 0;
      batch.push_back(b);
      tokens += chunks[i];
      if (chunks[i] == 1 && it->tokens == 1) ++decode;
    }
    lock.unlock();
    Status status;
    try {
      status = runner_->run(batch);
    } catch (const std::exception& e) {
      status = Status(ErrorCode::kInternal, e.what());
    }
    metrics_.count_batch(tokens, decode, tokens - decode);
    lock.lock();
    const int code =
        status.ok() ? 200
        : (status.code() == ErrorCode::kOutOfRange || status.code() == ErrorCode::kInvalidArgument)
            ? 400
            : 500;
    for (std::size_t i = 0; i < picked.size(); ++i) {
      Item* it = picked[i];
      if (status.ok()) {
        it->done += chunks[i];
        queued_tokens_ -= chunks[i];
      }
    }
    // Answer the finished items and, on failure, every item of a failed request.
    std::vector<Pending*> failed;
    if (!status.ok()) {
      for (Item* it : picked) failed.push_back(it->owner);
    }
    for (auto q = queue_.begin(); q != queue_.end();) {
      Item* it = *q;
      const bool fail = std::find(failed.begin(), failed.end(), it->owner) != failed.end();
      if (fail || it->done == it->tokens) {
        q = queue_.erase(q);
        finish_item(it, fail ? code : 200, fail ? status.message() : std::string());
      } else {
        ++q;
      }
    }
  }
}

void Scheduler::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace attn::serve
