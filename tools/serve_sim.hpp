// A serving simulation over the public API (attn bench --serve-sim): N sequences with random
// prompt lengths, continuous batching of chunked prefills and decode steps in ragged
// Engine::advance calls, sessions in one CachePool.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attn/engine.hpp"

namespace attn::tools {

struct ServeSimOptions {
  std::int64_t sequences = 64;
  std::int64_t prompt_min = 128, prompt_max = 2048;  ///< prompt lengths, uniform, inclusive
  std::int64_t gen_len = 128;                        ///< decode steps per sequence
  std::int64_t concurrent = 0;                       ///< most live sequences (0: sequences)
  std::int64_t max_batch_tokens = 2048;              ///< most tokens per advance() call
  std::uint64_t seed = 1;
};

struct ServeSimResult {
  std::int64_t calls = 0;
  std::int64_t prefill_tokens = 0, generated_tokens = 0;
  double seconds = 0;  ///< wall time of all advance() calls
  double generated_tokens_per_s = 0, prefill_tokens_per_s = 0;  ///< tokens / seconds
  double call_p50_ms = 0, call_p99_ms = 0;
  std::size_t pool_bytes_peak = 0;     ///< pool bytes in use at its peak
  std::size_t live_kv_bytes_peak = 0;  ///< KV bytes of the live positions at that moment
  std::size_t pool_capacity_bytes = 0;
  /// Calls with decode tokens only and `concurrent` sessions in them (steady-state decode):
  std::int64_t decode_calls = 0;
  double decode_call_p50_ms = 0;
  double decode_call_bytes = 0;    ///< KV bytes read (median call) + weight bytes
  std::size_t rss_peak_bytes = 0;  ///< VmHWM of the process after the run (0: unknown)
};

/// Runs the simulation on `engine` (context_length >= prompt_max + gen_len). Sequences are
/// admitted in order while fewer than `concurrent` are live; each call first gives every live
/// decoding sequence its one token, then fills the rest of max_batch_tokens with chunks of
/// the waiting prompts (chunked prefill), oldest first. A sequence leaves (releasing its
/// blocks) after gen_len decode steps.
Result<ServeSimResult> run_serve_sim(const Engine& engine, const ServeSimOptions& options);

}  // namespace attn::tools
