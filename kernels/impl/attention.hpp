// Fused attention (flash attention with online softmax) for one (batch, head), per xsimd arch.
//
// Algorithm: FlashAttention-2 (Dao 2023) laid out for a CPU. A call's query rows are split
// into q-chunks of q_block rows; each chunk is copied once into scratch, transposed and
// multiplied by scale * log2(e) (qt[d][row], so scores come out in log2 units and the
// softmax uses exp2 with no further multiply). Keys are walked in kv-blocks at fixed
// positions (multiples of kv_block from key 0, so a row's arithmetic never depends on the
// chunk it was computed in). For each kv-block and each tile of kLanes query rows:
//   S = Qtile · K_blockᵀ          register-tiled, attention_tiles.hpp (8x2 zmm on AVX-512)
//   mask                          only in tiles crossing the causal diagonal or the window
//                                 edge: masked scores are OVERWRITTEN with -inf
//   m_new = max(m, rowmax S); alpha = exp2(m - m_new); P = exp2(S - m_new); l = alpha l + ΣP
//   Oᵀ = alpha Oᵀ + (P · V_block)ᵀ  register-tiled, masked keys skipped per lane
// and at the end out = O / l (a row with l = 0, i.e. no visible key, gives 0). Key blocks
// entirely in the future (or before every row's window) are never touched; within a tile
// only keys some row can see are computed. The [seq_len, seq_len] score matrix never
// exists: per call the working set is qt and Oᵀ (q_block x head_dim each), one S tile
// (kv_block x kLanes) and the K/V rows of the current block, read in place.
//
// Block sizes (tuning constants, see q_block_for / kv_block_for): per q-chunk the kernel
// keeps qt + Oᵀ = 2 * q_block * head_dim floats hot in L2 and re-reads each K/V block
// once per tile (q_block / kLanes times) from L1/L2; a K+V block of 128 keys at head_dim 64
// is 64 KiB. q_block 128 for head_dim <= 64 (qt + Oᵀ = 64 KiB) and 64 above (64 KiB at
// head_dim 128, 128 KiB at 256) keeps everything well inside a 512 KiB L2 (Zen 1) while
// giving the engine >= 4 tasks per thread from seq_len 1024; kv_block 128: the S tile is
// 128 x 32 floats = 16 KiB on AVX-512, so S, a tile's qt/Oᵀ slices (8 KiB each at
// head_dim 64) and the V lines of one head-dim group stay in a 32-48 KiB L1d. A sweep of
// both over {64, 128, 256} at seq_len 2048 was flat within this machine's noise
// (docs/kernels-attention.md), so cache fit decided.
//
// Score modifiers (soft-capping, ALiBi; kernels.hpp): when AttentionArgs asks for them the tiles
// run a second instantiation of tile_block/qk that applies them to the S tile in registers,
// right after the QK FMAs and before the mask overwrite (the bias from each lane's query
// position, lim, and the key index: no bias matrix). Without them the code is unchanged.
//
// NaN flow: NaN in a visible score or value reaches the row through exp2 (exp2(NaN) = NaN
// makes l and O NaN) whatever x86 max does with it; a NaN/Inf in a masked key is replaced
// by -inf before the max, and a masked value is never multiplied in.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/impl/attention_tiles.hpp"
#include "kernels/impl/widen.hpp"
#include "kernels/kernels.hpp"

namespace attn::kernels {

namespace {  // internal linkage: no ODR clash between the per-ISA copies

/// Query rows per q-chunk (and per engine task); a multiple of every arch's kLanes.
constexpr std::size_t q_block_for(std::size_t head_dim) noexcept {
  return head_dim <= 64 ? 128 : 64;
}
/// Keys per kv-block (see the file comment).
constexpr std::size_t kv_block_for(std::size_t) noexcept { return 128; }
static_assert(kPageMultiple % kv_block_for(0) == 0, "a kv-block must lie in one cache block");
constexpr std::size_t round16(std::size_t n) noexcept { return (n + 15) / 16 * 16; }

}  // namespace

struct FlashAttention {
  template <class Arch>
  static std::size_t q_block(Arch, std::size_t head_dim) noexcept {
    return q_block_for(head_dim);
  }
  template <class Arch>
  static std::size_t scratch_floats(Arch, std::size_t head_dim) noexcept {
    using T = AttnTile<Arch>;
    const std::size_t qb = q_block_for(head_dim);
    // + one kv-block of K and V rows widened to f32 (a 16- or 8-bit paged cache).
    return 2 * round16(qb * head_dim) + 2 * round16(qb) +
           round16(kv_block_for(head_dim) * T::kLanes) +
           2 * round16(kv_block_for(head_dim) * head_dim);
  }

  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const AttentionArgs& a) const noexcept {
    const std::size_t qb = q_block_for(a.head_dim);
    // The score modifiers get their own instantiation of the whole q-chunk, so the default
    // path's code is what it was before they existed (with them inside q_chunk, even behind
    // a branch, GCC 12 inlined differently and seq_len 1024 / head_dim 64 ran ~5% slower).
    if (a.softcap > 0 || a.alibi_slope != 0) [[unlikely]] {
      for (std::size_t r0 = a.q_begin; r0 < a.q_end; r0 += qb)
        q_chunk<true>(Arch{}, a, r0, std::min(a.q_end, r0 + qb));
      return;
    }
    for (std::size_t r0 = a.q_begin; r0 < a.q_end; r0 += qb) {
      q_chunk<false>(Arch{}, a, r0, std::min(a.q_end, r0 + qb));
    }
  }

 private:
  // Rows [r0, r1) of the result, r1 - r0 <= q_block: reads those q rows into scratch
  // before writing those out rows, so out may alias q.
  template <bool Mod, class Arch>
  [[gnu::noinline]] static void q_chunk(Arch, const AttentionArgs& a, std::size_t r0,
                                        std::size_t r1) noexcept {
    using T = AttnTile<Arch>;
    using B = typename T::B;
    constexpr std::size_t L = T::kLanes;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const std::size_t head_dim = a.head_dim;
    const std::size_t qb = q_block_for(head_dim);
    const std::size_t n_tiles = (r1 - r0 + L - 1) / L;
    float* qt = a.scratch;
    float* ot = qt + round16(qb * head_dim);
    float* m = ot + round16(qb * head_dim);
    float* l = m + round16(qb);
    float* s = l + round16(qb);
    float* kw = s + round16(kv_block_for(head_dim) * L);  // a widened kv-block (16/8-bit cache)
    float* vw = kw + round16(kv_block_for(head_dim) * head_dim);
    const bool widen = a.pages != nullptr && a.pages->type != KvType::kF32;

    // qt[tile][d][lane] = q[row][d] * scale * log2(e); padding lanes get 0.
    const float c = a.scale * kLog2e;
    for (std::size_t t = 0; t < n_tiles; ++t) {
      const std::size_t i0 = r0 + t * L;
      T::pack_q(a.q + static_cast<std::ptrdiff_t>(i0) * a.ld_q, a.ld_q, std::min(L, r1 - i0),
                head_dim, c, qt + t * head_dim * L);
    }
    std::fill(ot, ot + n_tiles * head_dim * L, 0.0f);
    std::fill(m, m + n_tiles * L, kNegInf);
    std::fill(l, l + n_tiles * L, 0.0f);

    const auto kv = static_cast<std::int64_t>(a.seq_len_kv);
    const auto shift = kv - static_cast<std::int64_t>(a.seq_len_q);
    const auto win = static_cast<std::int64_t>(a.window);
    const bool windowed = a.causal && a.window > 0;
    const auto i_first = static_cast<std::int64_t>(r0), i_last = static_cast<std::int64_t>(r1) - 1;
    // Keys any row of the chunk can see.
    const std::int64_t hi_all = a.causal ? std::min(kv - 1, i_last + shift) : kv - 1;
    const std::int64_t lo_all = windowed ? std::max<std::int64_t>(0, i_first + shift - win + 1) : 0;
    const auto nk = static_cast<std::int64_t>(kv_block_for(head_dim));

    for (std::int64_t j0 = lo_all / nk * nk; j0 <= hi_all; j0 += nk) {
      const std::int64_t j1 = std::min(kv, j0 + nk) - 1;
      // The block's key and value rows from key j0 on: in place, or widened into kw / vw
      // (only the keys some row sees, [max(j0, lo_all), min(j1, hi_all)]).
      KvBlock blk;
      const auto uj0 = static_cast<std::size_t>(j0);
      if (widen) {
        const std::int64_t w_lo = std::max(j0, lo_all), w_hi = std::min(j1, hi_all);
        const auto off = static_cast<std::size_t>(w_lo - j0) * head_dim;
        widen_rows<Arch>(*a.pages, static_cast<std::size_t>(w_lo),
                         static_cast<std::size_t>(w_hi - w_lo + 1), head_dim, kw + off, vw + off);
        blk = {kw, vw, static_cast<std::ptrdiff_t>(head_dim),
               static_cast<std::ptrdiff_t>(head_dim)};
      } else if (a.pages != nullptr) {
        blk = {page_row(*a.pages, uj0, a.pages->k_offset),
               page_row(*a.pages, uj0, a.pages->v_offset), a.pages->ld, a.pages->ld};
      } else {
        blk = {a.k + j0 * a.ld_k, a.v + j0 * a.ld_v, a.ld_k, a.ld_v};
      }
      for (std::size_t t = 0; t < n_tiles; ++t) {
        const auto i0 = static_cast<std::int64_t>(r0 + t * L);
        const std::int64_t i1 = std::min(i_last, i0 + static_cast<std::int64_t>(L) - 1);
        // Keys [lo, hi] some row of the tile sees; [f_lo, f_hi] every row sees.
        std::int64_t lo = j0, hi = j1, f_lo = j0, f_hi = j1;
        if (a.causal) {
          hi = std::min(hi, i1 + shift);
          f_hi = std::min(f_hi, i0 + shift);
          if (windowed) {
            lo = std::max(lo, i0 + shift - win + 1);
            f_lo = std::max(f_lo, i1 + shift - win + 1);
          }
        }
        if (hi < lo) continue;
        const auto n = static_cast<std::size_t>(hi - lo + 1);
        const auto full_begin =
            static_cast<std::size_t>(std::clamp<std::int64_t>(f_lo - lo, 0, hi - lo + 1));
        const auto full_end = static_cast<std::size_t>(std::clamp<std::int64_t>(
            f_hi + 1 - lo, static_cast<std::int64_t>(full_begin), hi - lo + 1));
        typename T::LaneLimits lim;
        for (std::size_t v = 0; v < T::kQv; ++v) {
          lim.lim[v] =
              xsimd::batch<float, Arch>(static_cast<float>(i0 + shift)) + lane_iota<Arch>(v);
          lim.lim_lo[v] = windowed ? lim.lim[v] - B(static_cast<float>(win)) : B(kNegInf);
        }
        if constexpr (Mod) {
          const ScoreModsLog2 mod(a.softcap, a.alibi_slope);
          tile_block<true>(Arch{}, a, blk, uj0, qt + t * head_dim * L, ot + t * head_dim * L,
                           m + t * L, l + t * L, s, static_cast<std::size_t>(lo), n, full_begin,
                           full_end, lim, &mod);
        } else {
          tile_block<false>(Arch{}, a, blk, uj0, qt + t * head_dim * L, ot + t * head_dim * L,
                            m + t * L, l + t * L, s, static_cast<std::size_t>(lo), n, full_begin,
                            full_end, lim);
        }
      }
    }

    // out = O / l (written only now, so out may alias q).
    for (std::size_t t = 0; t < n_tiles; ++t) {
      const std::size_t i0 = r0 + t * L;
      T::store_out(ot + t * head_dim * L, l + t * L, std::min(L, r1 - i0), head_dim,
                   a.out + static_cast<std::ptrdiff_t>(i0) * a.ld_out, a.ld_out);
    }
  }

  template <class Arch>
  static xsimd::batch<float, Arch> lane_iota(std::size_t v) noexcept {
    using B = xsimd::batch<float, Arch>;
    alignas(64) float iota[B::size];
    for (std::size_t i = 0; i < B::size; ++i) iota[i] = static_cast<float>(v * B::size + i);
    return B::load_aligned(iota);
  }

  // Where a kv-block's rows are: key j0 of the block at k, its value at v.
  struct KvBlock {
    const float* k = nullptr;
    const float* v = nullptr;
    std::ptrdiff_t ld_k = 0;
    std::ptrdiff_t ld_v = 0;
  };

  // Rows [j, j + n) of a 16- or 8-bit paged cache widened to f32 rows of head_dim (int8:
  // times their scales) at k_out and v_out. They lie in one cache block (kPageMultiple).
  template <class Arch>
  static void widen_rows(const KvPages& pg, std::size_t j, std::size_t n, std::size_t head_dim,
                         float* k_out, float* v_out) noexcept {
    with_kv_type(pg.type, [&](auto type) {
      constexpr KvType T = decltype(type)::value;
      using B = xsimd::batch<float, Arch>;
      constexpr std::size_t W = B::size;
      const std::size_t hd_vec = head_dim / W * W;
      const auto one = [&](const KvElem<T>* row, float sc, float* out) {
        std::size_t d = 0;
        for (; d < hd_vec; d += W) {
          B x = load_kv<T, Arch>(row + d);
          if constexpr (T == KvType::kInt8) x *= B(sc);
          x.store_unaligned(out + d);
        }
        for (; d < head_dim; ++d) {
          float x = kv_scalar<T, Arch>(row + d);
          if constexpr (T == KvType::kInt8) x *= sc;
          out[d] = x;
        }
      };
      for (std::size_t r = 0; r < n; ++r) {
        float ks = 1.0f, vs = 1.0f;
        if constexpr (T == KvType::kInt8) {
          ks = page_scale(pg, j + r, pg.k_scale_offset);
          vs = page_scale(pg, j + r, pg.v_scale_offset);
        }
        one(page_row<KvElem<T>>(pg, j + r, pg.k_offset), ks, k_out + r * head_dim);
        one(page_row<KvElem<T>>(pg, j + r, pg.v_offset), vs, v_out + r * head_dim);
      }
    });
  }

  // One tile against keys [j_first, j_first + n) of the kv-block from key j0 at blk. Mod:
  // with the score modifiers (a separate instantiation, so the default path's code is unchanged).
  template <bool Mod, class Arch>
  static void tile_block(Arch, const AttentionArgs& a, const KvBlock& blk, std::size_t j0,
                         const float* qt, float* ot, float* m, float* l, float* s,
                         std::size_t j_first, std::size_t n, std::size_t full_begin,
                         std::size_t full_end, const typename AttnTile<Arch>::LaneLimits& lim,
                         const ScoreModsLog2* mod = nullptr) noexcept {
    using T = AttnTile<Arch>;
    constexpr std::size_t L = T::kLanes;
    const std::size_t head_dim = a.head_dim;
    const auto rel = static_cast<std::ptrdiff_t>(j_first - j0);
    const float* k = blk.k + rel * blk.ld_k;
    const std::ptrdiff_t ld_k = blk.ld_k;
    const std::ptrdiff_t ld_v = blk.ld_v;
    const auto jf = static_cast<float>(j_first);
    typename T::B vmax[T::kQv], alpha[T::kQv];
    for (auto& x : vmax) x = typename T::B(-std::numeric_limits<float>::infinity());
    T::for_each_group(n, [&](std::size_t r, auto rows) {
      T::template qk<decltype(rows)::value, Mod>(qt, k + static_cast<std::ptrdiff_t>(r) * ld_k,
                                                 ld_k, head_dim, s + r * L, r, full_begin, full_end,
                                                 lim, jf, vmax, mod);
    });
    T::softmax(s, n, vmax, m, l, alpha);
    const float* v = blk.v + rel * blk.ld_v;
    T::for_each_group(head_dim, [&](std::size_t d, auto rows) {
      T::template pv<decltype(rows)::value>(s, v + d, ld_v, n, full_begin, full_end, ot + d * L,
                                            alpha, lim, jf);
    });
  }
};

}  // namespace attn::kernels
