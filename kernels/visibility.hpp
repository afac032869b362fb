// The causal-visibility rule, stated once: which keys a query row sees, and how many
// (query, key) pairs that makes. Used by the kernels' float64 twins, the unfused softmax,
// the engine (decode windows, FLOP counts), the benchmarks and the tests.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace attn::kernels {

/// Visible keys [begin, end) of one query row.
struct KeyRange {
  std::size_t begin = 0;
  std::size_t end = 0;
  constexpr std::size_t size() const noexcept { return end - begin; }
  constexpr bool contains(std::size_t j) const noexcept { return begin <= j && j < end; }
};

/// Returns the keys of [0, kv_len) up to and including key `last` (which may lie outside),
/// and with window > 0 only the last `window` of those.
constexpr KeyRange keys_up_to(std::int64_t last, std::size_t kv_len, std::size_t window) noexcept {
  const auto n = static_cast<std::int64_t>(kv_len);
  const std::int64_t end = std::clamp<std::int64_t>(last + 1, 0, n);
  std::int64_t begin =
      window > 0 ? std::max<std::int64_t>(0, last - static_cast<std::int64_t>(window) + 1) : 0;
  begin = std::min(begin, end);
  return {static_cast<std::size_t>(begin), static_cast<std::size_t>(end)};
}

/// Returns the keys query row `row` of seq_len_q sees among kv_len keys. Causal alignment is
/// bottom-right: the last query is the last key, so row i sees keys j <= i + kv_len -
/// seq_len_q (with window > 0, only the last `window` of those). Not causal: every key.
constexpr KeyRange visible_keys(std::size_t row, std::size_t seq_len_q, std::size_t kv_len,
                                bool causal, std::size_t window) noexcept {
  if (!causal) return {0, kv_len};
  const std::int64_t last = static_cast<std::int64_t>(row) + static_cast<std::int64_t>(kv_len) -
                            static_cast<std::int64_t>(seq_len_q);
  return keys_up_to(last, kv_len, window);
}

/// Returns the number of visible (query, key) pairs: the FLOPs of attention are counted on
/// these only (4 * head_dim per pair: one multiply-add for the score, one for P·V).
constexpr double visible_pairs(std::size_t seq_len_q, std::size_t kv_len, bool causal,
                               std::size_t window) noexcept {
  if (!causal) return static_cast<double>(seq_len_q) * static_cast<double>(kv_len);
  double pairs = 0;
  for (std::size_t i = 0; i < seq_len_q; ++i) {
    pairs += static_cast<double>(visible_keys(i, seq_len_q, kv_len, causal, window).size());
  }
  return pairs;
}

}  // namespace attn::kernels
