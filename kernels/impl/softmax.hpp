// Row softmax with causal masking (the unfused path) and the vector exp, per xsimd arch.
//
// Algorithm (MaskedSoftmaxRows): three streaming passes over each row, all in L1 for rows of
// up to ~8k columns: (1) t = s * scale * log2(e) over the visible columns and their max,
// (2) p = exp2(t - max) and its sum, masked columns written as 0, (3) multiply the whole row
// by 1/sum. Masked columns are never read for the max or the sum, so NaN/Inf there cannot
// reach the output. NaN flow (deliberate, matching kernels::reference): the max may drop a
// NaN (x86 max), but exp2(NaN - max) is NaN, so the sum is NaN and pass 3 turns the whole
// row into NaN; a row with no visible column (or only -inf scores) has sum 0 and becomes 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/impl/simd_math.hpp"
#include "kernels/kernels.hpp"
#include "kernels/visibility.hpp"

namespace attn::kernels {

struct VectorExp {
  /// y = exp(x) computed as the kernels do: exp2_fast(x * log2(e)), clamped above at 2^128
  /// (so x > 88.38 gives +inf; the softmax kernels never pass positive arguments).
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* x, float* y, std::size_t n) const noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      // min returns its second operand on NaN, so NaN in x survives.
      const B t = min_nan_b(B(128.0f), B::load_unaligned(x + i) * B(kLog2e));
      exp2_fast(t).store_unaligned(y + i);
    }
    if (i < n) {
      alignas(64) float buf[W] = {};
      for (std::size_t j = i; j < n; ++j) buf[j - i] = x[j];
      const B t = min_nan_b(B(128.0f), B::load_aligned(buf) * B(kLog2e));
      exp2_fast(t).store_aligned(buf);
      for (std::size_t j = i; j < n; ++j) y[j] = buf[j - i];
    }
  }
};

struct MaskedSoftmaxRows {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, float* s, std::ptrdiff_t ld, std::size_t rows,
                                    std::size_t cols, float scale, bool causal,
                                    std::ptrdiff_t visible_offset, std::size_t window,
                                    float softcap = 0, float alibi_slope = 0) const noexcept {
    const ScoreModsLog2 mod(softcap, alibi_slope);
    for (std::size_t r = 0; r < rows; ++r) {
      float* row = s + static_cast<std::ptrdiff_t>(r) * ld;
      const auto position = static_cast<std::int64_t>(r) + visible_offset;
      const KeyRange keys = causal ? keys_up_to(position, cols, window) : KeyRange{0, cols};
      if (mod.any()) [[unlikely]] {
        softmax_row<true>(Arch{}, row, keys.begin, keys.end, cols, scale * kLog2e, &mod,
                          static_cast<float>(-position));
      } else {
        softmax_row<false>(Arch{}, row, keys.begin, keys.end, cols, scale * kLog2e);
      }
    }
  }

 private:
  // Mod: soft-capping / ALiBi in pass 1 (column j is rel0 + j positions from the row).
  template <bool Mod, class Arch>
  static void softmax_row(Arch, float* row, std::size_t lo, std::size_t hi, std::size_t cols,
                          float c, const ScoreModsLog2* mod = nullptr, float rel0 = 0) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < lo; ++j) row[j] = 0.0f;
    for (std::size_t j = hi; j < cols; ++j) row[j] = 0.0f;
    // Pass 1: scale into log2 units, and the max.
    B vmax(kNegInf);
    std::size_t j = lo;
    if constexpr (Mod) {
      alignas(64) float iota[W];
      for (std::size_t i = 0; i < W; ++i) iota[i] = static_cast<float>(i);
      const B lane = B::load_aligned(iota);
      for (; j + W <= hi; j += W) {
        const B rel = B(rel0 + static_cast<float>(j)) + lane;
        const B t = mod->apply(B::load_unaligned(row + j) * B(c), rel);
        t.store_unaligned(row + j);
        vmax = max_nan_b(vmax, t);
      }
    } else {
      for (; j + W <= hi; j += W) {
        const B t = B::load_unaligned(row + j) * B(c);
        t.store_unaligned(row + j);
        vmax = max_nan_b(vmax, t);
      }
    }
    float m = hmax(vmax);
    for (std::size_t k = j; k < hi; ++k) {
      row[k] *= c;
      if constexpr (Mod) row[k] = mod->apply(B(row[k]), B(rel0 + static_cast<float>(k))).get(0);
      m = m > row[k] ? m : row[k];
    }
    // A row whose max is -inf has only -inf (or NaN) scores: exponentiate against 0 so
    // -inf gives 0 (not NaN) and NaN stays NaN.
    const float m_used = m == kNegInf ? 0.0f : m;
    // Pass 2: exponentials and their sum.
    B vsum(0.0f);
    j = lo;
    for (; j + W <= hi; j += W) {
      const B p = exp2_fast(B::load_unaligned(row + j) - B(m_used));
      p.store_unaligned(row + j);
      vsum += p;
    }
    if (j < hi) {
      alignas(64) float buf[W];
      for (std::size_t k = 0; k < W; ++k) buf[k] = j + k < hi ? row[j + k] : kNegInf;
      const B p = exp2_fast(B::load_aligned(buf) - B(m_used));
      p.store_aligned(buf);
      vsum += p;
      for (std::size_t k = j; k < hi; ++k) row[k] = buf[k - j];
    }
    const float sum = xsimd::hadd(vsum);
    // Pass 3: normalise. sum == 0 (nothing visible) gives a zero row; NaN gives a NaN row.
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    j = 0;
    for (; j + W <= cols; j += W) (B::load_unaligned(row + j) * B(inv)).store_unaligned(row + j);
    for (; j < cols; ++j) row[j] *= inv;
  }
};

}  // namespace attn::kernels
