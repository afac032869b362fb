// Register-tiled micro-kernels of the fused attention (kernels/impl/attention.hpp).
//
// Layout ("query lanes"): a tile is kLanes = kQv * W consecutive query rows, and every vector
// holds one value for each of them. Q is kept transposed, qt[d][lane] (scaled once when
// packed), so S = Q·Kᵀ is a rank-1 update per head dimension d: broadcast k[j][d] for kRows
// keys, load the kQv query vectors of qt[d], kRows x kQv FMAs. P·V is the same with the roles
// swapped: broadcast v[j][d] for kRows head dims, load the kQv vectors of p[j], FMA into the
// transposed output ot[d][lane]. K and V are read in place (row stride ld), never transposed
// or copied, and the softmax statistics (max, sum, rescale) are lane-wise vector operations:
// no horizontal reductions anywhere. Every score and output element is one FMA chain in a
// fixed order (d ascending for scores, key ascending for outputs), whatever the tile shape
// or the tile's first key, so a query row's bits do not depend on how rows were grouped.
#pragma once

#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "kernels/impl/simd_math.hpp"

namespace attn::kernels {

template <class Arch>
struct AttnTile {
  using B = xsimd::batch<float, Arch>;
  using M = xsimd::batch_bool<float, Arch>;
  static constexpr std::size_t kW = B::size;
  // Two query vectors per tile (narrow, so short q-blocks waste few lanes) and kRows keys or
  // head dims per register tile: kRows x 2 accumulators plus 2 loads and a broadcast. Measured
  // at seq_len 512/2048, head_dim 64/128: AVX-512 8 x 2 beats 6, 10, 12 and 14 x 2 by 3-7%
  // (it also divides 64 and 128 into equal groups); AVX2 6 x 2 (12 of 16 ymm) beats 4 and 5 by
  // ~5%; SSE2 4 x 2 leaves room for the temporary of its mul+add.
  static constexpr std::size_t kQv = 2;
  static constexpr std::size_t kLanes = kQv * kW;
  static constexpr std::size_t kRows = kW == 16 ? 8 : (kW == 8 ? 6 : 4);

  /// Which keys of a tile are masked for which lanes: lane l sees key j iff
  /// lim_lo[l] < j <= lim[l] (lim = query row + seq_len_kv - seq_len_q). Positions are
  /// compared as floats, exact below 2^24 tokens.
  struct LaneLimits {
    B lim[kQv];
    B lim_lo[kQv];
    M visible(float j, std::size_t v) const noexcept {
      const B jj(j);
      return (lim[v] >= jj) & (lim_lo[v] < jj);
    }
  };

  /// Calls f(std::integral_constant<size_t, n>{}) for 1 <= n <= kRows (tail tiles).
  template <class F>
  static void with_rows(std::size_t n, F&& f) noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((n == I + 1 ? (f(std::integral_constant<std::size_t, I + 1>{}), 0) : 0), ...);
    }
    (std::make_index_sequence<kRows>{});
  }

  /// Writes the 4-float blocks of t[0..3] (see transpose4): block b of t[k] goes to
  /// dst + (4b + k) * ld.
  static void scatter_blocks(const B* t, float* dst, std::ptrdiff_t ld) noexcept {
    alignas(64) float buf[4][kW];
    for (std::size_t k = 0; k < 4; ++k) t[k].store_aligned(buf[k]);
    for (std::size_t k = 0; k < 4; ++k)
      for (std::size_t b = 0; b < kW / 4; ++b)
        std::memcpy(dst + static_cast<std::ptrdiff_t>(4 * b + k) * ld, buf[k] + 4 * b, 16);
  }

  /// qt[d][lane] = q[lane][d] * c for lanes < rows (0 for the other lanes up to kLanes),
  /// d < head_dim; q rows at stride ld_q, qt rows at stride kLanes. Blocks of 4 rows x W dims are
  /// transposed in registers (a scalar transpose cost ~15% of a 128-token causal call).
  static void pack_q(const float* q, std::ptrdiff_t ld_q, std::size_t rows, std::size_t head_dim,
                     float c, float* qt) noexcept {
    const std::size_t hd_w = head_dim / kW * kW;
    std::size_t l0 = 0;
    for (; l0 + 4 <= rows; l0 += 4) {
      const float* q0 = q + static_cast<std::ptrdiff_t>(l0) * ld_q;
      for (std::size_t d0 = 0; d0 < hd_w; d0 += kW) {
        B x[4], t[4];
        for (std::size_t i = 0; i < 4; ++i)
          x[i] = B::load_unaligned(q0 + static_cast<std::ptrdiff_t>(i) * ld_q + d0) * B(c);
        transpose4_in_blocks(x, t);
        scatter_blocks(t, qt + d0 * kLanes + l0, kLanes);
      }
      for (std::size_t d = hd_w; d < head_dim; ++d)
        for (std::size_t i = 0; i < 4; ++i)
          qt[d * kLanes + l0 + i] = q0[static_cast<std::ptrdiff_t>(i) * ld_q + d] * c;
    }
    for (; l0 < kLanes; ++l0) {
      const float* qi = q + static_cast<std::ptrdiff_t>(l0) * ld_q;
      for (std::size_t d = 0; d < head_dim; ++d) qt[d * kLanes + l0] = l0 < rows ? qi[d] * c : 0.0f;
    }
  }

  /// out[lane][d] = ot[d][lane] / l[lane] for lanes < rows (0 where l == 0: no visible key;
  /// NaN stays NaN), transposed back in registers as pack_q.
  static void store_out(const float* ot, const float* l, std::size_t rows, std::size_t head_dim,
                        float* out, std::ptrdiff_t ld_out) noexcept {
    alignas(64) float inv[kLanes];
    for (std::size_t i = 0; i < kLanes; ++i) inv[i] = l[i] == 0.0f ? 0.0f : 1.0f / l[i];
    const std::size_t hd4 = head_dim / 4 * 4;
    std::size_t w0 = 0;
    for (; w0 + kW <= rows; w0 += kW) {
      const B iv = B::load_aligned(inv + w0);
      float* o0 = out + static_cast<std::ptrdiff_t>(w0) * ld_out;
      for (std::size_t d0 = 0; d0 < hd4; d0 += 4) {
        B x[4], t[4];
        for (std::size_t i = 0; i < 4; ++i)
          x[i] = B::load_aligned(ot + (d0 + i) * kLanes + w0) * iv;
        transpose4_in_blocks(x, t);
        scatter_blocks(t, o0 + d0, ld_out);
      }
      for (std::size_t lane = w0; lane < w0 + kW; ++lane)
        for (std::size_t d = hd4; d < head_dim; ++d)
          out[static_cast<std::ptrdiff_t>(lane) * ld_out + d] = ot[d * kLanes + lane] * inv[lane];
    }
    for (std::size_t lane = w0; lane < rows; ++lane)
      for (std::size_t d = 0; d < head_dim; ++d)
        out[static_cast<std::ptrdiff_t>(lane) * ld_out + d] = ot[d * kLanes + lane] * inv[lane];
  }

  /// Splits n into ceil(n / kRows) groups of near-equal size (<= kRows) and calls
  /// f(offset, integral_constant<size>) for each in order: e.g. with kRows 6, 64 head dims
  /// become 9 groups of 6 and 2 of 5 instead of 10 x 6 and a 4-row tail that runs at 2/3 of
  /// the FMA rate (and 65 would leave a 1-row tail).
  template <class F>
  static void for_each_group(std::size_t n, F&& f) noexcept {
    if (n == 0) return;
    const std::size_t groups = (n + kRows - 1) / kRows;
    const std::size_t base = n / groups, extra = n % groups;
    std::size_t off = 0;
    for (std::size_t g = 0; g < groups; ++g) {
      const std::size_t size = base + (g < extra ? 1 : 0);
      with_rows(size, [&](auto rows) { f(off, rows); });
      off += size;
    }
  }

  /// s[r][lane] = sum_d qt[d][lane] * k[r][d] for N keys (rows of k at stride ld_k), keys
  /// j0 .. j0 + N - 1 of the tile. Keys outside [full_begin, full_end) get -inf on the lanes that
  /// may not see them; vmax (kQv vectors) takes the lane-wise max of what is stored.
  /// Mod: soft-capping / ALiBi (`mod`) applied to every score before the mask (lane l's
  /// query sits at position lim.lim[l]); only the modified branch passes it.
  template <std::size_t N, bool Mod = false>
  static void qk(const float* qt, const float* k, std::ptrdiff_t ld_k, std::size_t head_dim,
                 float* s, std::size_t j0, std::size_t full_begin, std::size_t full_end,
                 const LaneLimits& lim, float j_first, B* vmax,
                 const ScoreModsLog2* mod = nullptr) noexcept {
    B acc[N][kQv];
    const float* kr[N];
    for (std::size_t r = 0; r < N; ++r) {
      kr[r] = k + static_cast<std::ptrdiff_t>(r) * ld_k;
      for (std::size_t v = 0; v < kQv; ++v) acc[r][v] = B(0.0f);
    }
    for (std::size_t d = 0; d < head_dim; ++d) {
      B q[kQv];
      for (std::size_t v = 0; v < kQv; ++v) q[v] = B::load_aligned(qt + d * kLanes + v * kW);
      for (std::size_t r = 0; r < N; ++r) {
        const B kb(kr[r][d]);
        for (std::size_t v = 0; v < kQv; ++v) acc[r][v] = xsimd::fma(kb, q[v], acc[r][v]);
      }
    }
    if constexpr (Mod) {
      for (std::size_t r = 0; r < N; ++r) {
        const B key(j_first + static_cast<float>(j0 + r));
        for (std::size_t v = 0; v < kQv; ++v) acc[r][v] = mod->apply(acc[r][v], key - lim.lim[v]);
      }
    }
    const B neg_inf(-std::numeric_limits<float>::infinity());
    for (std::size_t r = 0; r < N; ++r) {
      const std::size_t j = j0 + r;
      if (j < full_begin || j >= full_end) [[unlikely]] {
        for (std::size_t v = 0; v < kQv; ++v)
          acc[r][v] =
              xsimd::select(lim.visible(j_first + static_cast<float>(j), v), acc[r][v], neg_inf);
      }
      for (std::size_t v = 0; v < kQv; ++v) {
        vmax[v] = max_nan_b(vmax[v], acc[r][v]);
        acc[r][v].store_aligned(s + r * kLanes + v * kW);
      }
    }
  }

  /// ot[r][lane] = alpha[lane] * ot[r][lane] + sum_j v[j][r] * p[j][lane] for N head dims,
  /// keys j = 0 .. n-1 in order. Keys outside [full_begin, full_end) are masked for some lanes:
  /// there the update is skipped per lane (select), so a NaN/Inf value of a masked key never meets
  /// its zero probability (0 * NaN).
  template <std::size_t N>
  // Always inlined: with the modified instantiation GCC would otherwise call pv<6> out of
  // line from the default path too.
  [[gnu::always_inline]] static inline void pv(const float* p, const float* v, std::ptrdiff_t ld_v,
                                               std::size_t n, std::size_t full_begin,
                                               std::size_t full_end, float* ot, const B* alpha,
                                               const LaneLimits& lim, float j_first) noexcept {
    B acc[N][kQv];
    for (std::size_t r = 0; r < N; ++r)
      for (std::size_t c = 0; c < kQv; ++c)
        acc[r][c] = B::load_aligned(ot + r * kLanes + c * kW) * alpha[c];
    pv_keys<N, true>(acc, p, v, ld_v, 0, full_begin, lim, j_first);
    pv_keys<N, false>(acc, p, v, ld_v, full_begin, full_end, lim, j_first);
    pv_keys<N, true>(acc, p, v, ld_v, full_end, n, lim, j_first);
    for (std::size_t r = 0; r < N; ++r)
      for (std::size_t c = 0; c < kQv; ++c) acc[r][c].store_aligned(ot + r * kLanes + c * kW);
  }

  // acc += v[j][r] * p[j] for keys [j_begin, j_end); Masked: per-lane select (see pv).
  // Always inlined so acc stays in registers.
  template <std::size_t N, bool Masked>
  [[gnu::always_inline]] static inline void pv_keys(B (&acc)[N][kQv], const float* p,
                                                    const float* v, std::ptrdiff_t ld_v,
                                                    std::size_t j_begin, std::size_t j_end,
                                                    const LaneLimits& lim, float j_first) noexcept {
    const float* vj = v + static_cast<std::ptrdiff_t>(j_begin) * ld_v;
    for (std::size_t j = j_begin; j < j_end; ++j, vj += ld_v) {
      B pj[kQv];
      for (std::size_t c = 0; c < kQv; ++c) pj[c] = B::load_aligned(p + j * kLanes + c * kW);
      if constexpr (Masked) {
        for (std::size_t c = 0; c < kQv; ++c) {
          const M vis = lim.visible(j_first + static_cast<float>(j), c);
          for (std::size_t r = 0; r < N; ++r)
            acc[r][c] = xsimd::select(vis, xsimd::fma(B(vj[r]), pj[c], acc[r][c]), acc[r][c]);
        }
      } else {
        for (std::size_t r = 0; r < N; ++r) {
          const B vb(vj[r]);
          for (std::size_t c = 0; c < kQv; ++c) acc[r][c] = xsimd::fma(vb, pj[c], acc[r][c]);
        }
      }
    }
  }

  /// Online-softmax step of one tile over n keys (scores s[j][lane] in log2 units, already
  /// masked by qk, vmax their lane-wise max): updates the running max m and sum l, turns s
  /// into probabilities relative to the new max and returns the factor alpha that rescales
  /// the output accumulated so far. A lane whose max is still -inf exponentiates against 0
  /// instead (exp2(-inf - -inf) would be NaN): its probabilities are 0 and alpha is 0 on a
  /// zero accumulator. A lane without visible keys here keeps m, and alpha = 1 exactly, so
  /// blocks it cannot see leave it bit-for-bit unchanged.
  static void softmax(float* s, std::size_t n, const B* vmax, float* m, float* l,
                      B* alpha) noexcept {
    const B neg_inf(-std::numeric_limits<float>::infinity());
    B m_used[kQv], sum[kQv];
    for (std::size_t c = 0; c < kQv; ++c) {
      const B m_old = B::load_aligned(m + c * kW);
      const B m_new = max_nan_b(m_old, vmax[c]);
      m_new.store_aligned(m + c * kW);
      m_used[c] = xsimd::select(m_new == neg_inf, B(0.0f), m_new);
      alpha[c] = exp2_fast(m_old - m_used[c]);
      sum[c] = B(0.0f);
    }
    for (std::size_t j = 0; j < n; ++j) {
      for (std::size_t c = 0; c < kQv; ++c) {
        const B pj = exp2_fast(B::load_aligned(s + j * kLanes + c * kW) - m_used[c]);
        pj.store_aligned(s + j * kLanes + c * kW);
        sum[c] += pj;
      }
    }
    for (std::size_t c = 0; c < kQv; ++c)
      xsimd::fma(alpha[c], B::load_aligned(l + c * kW), sum[c]).store_aligned(l + c * kW);
  }
};

}  // namespace attn::kernels
