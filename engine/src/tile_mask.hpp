// The causal mask as tile metadata: which (q-block, kv-block) tiles are full, partial or
// empty. O(1) memory: tiles are classified from the block bounds, never from a
// [context_length, context_length] matrix.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace attn::detail {

enum class Tile { kFull, kPartial, kEmpty };

class TileMask {
 public:
  TileMask() = default;
  /// Causal attention of seq_len_q queries over seq_len_kv keys, bottom-right aligned
  /// (query i sees keys j <= i + seq_len_kv - seq_len_q, and with window > 0 only the last
  /// `window` of those), tiled in q_block x kv_block tiles.
  TileMask(bool causal, std::size_t window, std::size_t q_block, std::size_t kv_block)
      : causal_(causal), window_(window), q_block_(q_block), kv_block_(kv_block) {}

  std::size_t q_block() const noexcept { return q_block_; }
  std::size_t kv_block() const noexcept { return kv_block_; }

  /// Classifies tile (qb, kb) for the given lengths.
  Tile classify(std::size_t qb, std::size_t kb, std::size_t seq_len_q,
                std::size_t seq_len_kv) const noexcept {
    if (!causal_) return Tile::kFull;
    const std::int64_t shift = static_cast<std::int64_t>(seq_len_kv) - static_cast<std::int64_t>(seq_len_q);
    const std::int64_t i0 = static_cast<std::int64_t>(qb * q_block_);
    const std::int64_t i1 = static_cast<std::int64_t>(std::min(seq_len_q, (qb + 1) * q_block_)) - 1;
    const std::int64_t j0 = static_cast<std::int64_t>(kb * kv_block_);
    const std::int64_t j1 = static_cast<std::int64_t>(std::min(seq_len_kv, (kb + 1) * kv_block_)) - 1;
    // Visible: lo(i) <= j <= hi(i), hi(i) = i + shift, lo(i) = hi(i) - window + 1.
    const std::int64_t w = static_cast<std::int64_t>(window_);
    if (j0 > i1 + shift) return Tile::kEmpty;                 // all keys after every limit
    if (w > 0 && j1 < i0 + shift - w + 1) return Tile::kEmpty;  // all keys before every window
    const bool all_before_limit = j1 <= i0 + shift;
    const bool all_inside_window = w == 0 || j0 >= i1 + shift - w + 1;
    return all_before_limit && all_inside_window ? Tile::kFull : Tile::kPartial;
  }

  /// Returns the number of visible (query, key) pairs: the FLOPs of causal attention are
  /// counted on these only.
  double visible_pairs(std::size_t seq_len_q, std::size_t seq_len_kv) const noexcept {
    if (!causal_) return static_cast<double>(seq_len_q) * static_cast<double>(seq_len_kv);
    double pairs = 0;
    const std::int64_t shift = static_cast<std::int64_t>(seq_len_kv) - static_cast<std::int64_t>(seq_len_q);
    for (std::size_t i = 0; i < seq_len_q; ++i) {
      const std::int64_t hi = std::min<std::int64_t>(static_cast<std::int64_t>(i) + shift,
                                                     static_cast<std::int64_t>(seq_len_kv) - 1);
      std::int64_t lo = 0;
      if (window_ > 0) lo = std::max<std::int64_t>(0, hi - static_cast<std::int64_t>(window_) + 1);
      if (hi >= lo) pairs += static_cast<double>(hi - lo + 1);
    }
    return pairs;
  }

  /// Returns the relative cost of q-block qb: its visible tiles (for task balancing).
  std::size_t block_cost(std::size_t qb, std::size_t seq_len_q, std::size_t seq_len_kv) const noexcept {
    const std::size_t n_kb = (seq_len_kv + kv_block_ - 1) / kv_block_;
    std::size_t cost = 0;
    for (std::size_t kb = 0; kb < n_kb; ++kb) cost += classify(qb, kb, seq_len_q, seq_len_kv) != Tile::kEmpty;
    return cost;
  }

 private:
  bool causal_ = false;
  std::size_t window_ = 0;
  std::size_t q_block_ = 64;
  std::size_t kv_block_ = 64;
};

}  // namespace attn::detail
