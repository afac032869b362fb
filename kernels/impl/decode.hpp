// Decode attention: one query against a chunk of keys, and the merge of chunk partials.
//
// Algorithm: decode is memory-bound (each key costs 2 * head_dim FMAs for 8 * head_dim bytes
// of K and V), so the kernel reads every K and V row exactly once and keeps the arithmetic
// cheap enough to hide under the DRAM stream. Inside a chunk it runs the online softmax of
// the fused kernel over sub-blocks of kSub = 128 keys: scores of the 128 keys (vector FMAs
// over the head dims key by key in address order, one horizontal sum per key), their max,
// exp2 and sum in L1, then the 128 V rows into register accumulators (two sets, even and odd
// keys, so the FMA latency is hidden). Measured choices (loop order, sub-block size) are noted
// where they are made; docs/kernels-attention.md has the numbers. Scores are in log2 units (scale *
// log2(e) folded into one multiply, exp2 as in the fused kernel); so is DecodePartial::max, which
// only DecodeMerge reads. Each chunk yields (max, sum, unnormalised out); the merge rescales them
// by exp2(max_c - max) in chunk order, so the result depends only on the fixed chunking, not on
// which thread computed which chunk. Soft-capping / ALiBi (DecodeMods) are one extra pass over
// a sub-block's scores, taken only when asked. DecodeChunkGroup runs the query heads of one
// kv head (grouped-query attention) with the loop over them inside the loop over sub-blocks:
// each K/V sub-block is read from DRAM once per group, each K row is loaded into registers
// once for all rows, and the dot products are reduced W keys at a time (haddp): a row's bits
// differ from DecodeChunk's by rounding, but do not depend on the other rows. NaN flows as in the
// fused kernel (through exp2 into the sums, even when a NaN-dropping max ignored it); no visible
// key (or only -inf scores) gives 0.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "kernels/impl/simd_math.hpp"
#include "kernels/impl/widen.hpp"
#include "kernels/kernels.hpp"

namespace attn::kernels {

namespace {  // internal linkage: no ODR clash between the per-ISA copies

// Key or value rows at a fixed stride (a contiguous cache, or a run inside one block);
// int8: their scales at stride 1.
template <KvType T>
struct StridedRows {
  static constexpr KvType kType = T;
  const KvElem<T>* p;
  std::ptrdiff_t ld;
  const float* scales = nullptr;
  const KvElem<T>* operator()(std::size_t j) const noexcept {
    return p + static_cast<std::ptrdiff_t>(j) * ld;
  }
  float scale(std::size_t j) const noexcept { return scales[j]; }
};

// Rows of a paged cache that cross a block boundary: each row resolved through the table
// (block_positions is a power of two: a shift and a mask per row).
template <KvType T>
struct PagedRows {
  static constexpr KvType kType = T;
  const void* const* blocks;
  std::ptrdiff_t offset;
  std::ptrdiff_t ld;
  std::size_t first;
  unsigned shift;
  std::size_t mask;
  std::ptrdiff_t scale_offset = 0;
  const KvElem<T>* operator()(std::size_t j) const noexcept {
    const std::size_t p = first + j;
    return static_cast<const KvElem<T>*>(blocks[p >> shift]) + offset +
           static_cast<std::ptrdiff_t>(p & mask) * ld;
  }
  float scale(std::size_t j) const noexcept {
    const std::size_t p = first + j;
    const auto* base = static_cast<const unsigned char*>(blocks[p >> shift]);
    return reinterpret_cast<const float*>(base + scale_offset)[p & mask];
  }
};

// Where a chunk's keys and values are: strided (k, v; f32 only) or a block table from
// first_key on, with elements of type T.
template <KvType T>
struct KvSource {
  const float* k = nullptr;
  std::ptrdiff_t ld_k = 0;
  const float* v = nullptr;
  std::ptrdiff_t ld_v = 0;
  const KvPages* pages = nullptr;
  std::size_t first_key = 0;

  // Calls f(k_rows, v_rows) for keys [j0, j0 + n) of the chunk (n >= 1): StridedRows when
  // they lie in one run of memory (always for a contiguous cache; for a paged one unless the
  // sub-block crosses a block boundary, which only a window's unaligned start makes happen),
  // else PagedRows. The arithmetic is the same either way, so are the bits.
  template <class F>
  void rows(std::size_t j0, std::size_t n, F&& f) const noexcept {
    if constexpr (T == KvType::kF32) {
      if (pages == nullptr) {
        f(StridedRows<T>{k + static_cast<std::ptrdiff_t>(j0) * ld_k, ld_k},
          StridedRows<T>{v + static_cast<std::ptrdiff_t>(j0) * ld_v, ld_v});
        return;
      }
    }
    const std::size_t p = first_key + j0, bp = pages->block_positions;
    if (p / bp == (p + n - 1) / bp) {
      const void* block = pages->blocks[p / bp];
      const auto at = static_cast<std::ptrdiff_t>(p % bp);
      const KvElem<T>* base = static_cast<const KvElem<T>*>(block) + at * pages->ld;
      const float* ks = nullptr;
      const float* vs = nullptr;
      if constexpr (T == KvType::kInt8) {
        const auto* bytes = static_cast<const unsigned char*>(block);
        ks = reinterpret_cast<const float*>(bytes + pages->k_scale_offset) + at;
        vs = reinterpret_cast<const float*>(bytes + pages->v_scale_offset) + at;
      }
      f(StridedRows<T>{base + pages->k_offset, pages->ld, ks},
        StridedRows<T>{base + pages->v_offset, pages->ld, vs});
      return;
    }
    const auto shift = static_cast<unsigned>(std::countr_zero(bp));
    f(PagedRows<T>{pages->blocks, pages->k_offset, pages->ld, p, shift, bp - 1,
                   pages->k_scale_offset},
      PagedRows<T>{pages->blocks, pages->v_offset, pages->ld, p, shift, bp - 1,
                   pages->v_scale_offset});
  }
};

}  // namespace

struct DecodeChunk {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* q, const float* k, std::ptrdiff_t ld_k,
                                    const float* v, std::ptrdiff_t ld_v, std::size_t n_kv,
                                    std::size_t head_dim, float scale, float* out,
                                    DecodePartial* partial,
                                    const DecodeMods& mods = {}) const noexcept {
    // The modifiers get their own instantiation, chosen once, so the default code is as before.
    const KvSource<KvType::kF32> src{k, ld_k, v, ld_v};
    if (mods.softcap > 0 || mods.alibi_slope != 0) [[unlikely]] {
      chunk<true>(Arch{}, q, src, n_kv, head_dim, scale, out, partial, mods);
    } else {
      chunk<false>(Arch{}, q, src, n_kv, head_dim, scale, out, partial, mods);
    }
  }

  /// operator() over keys [first_key, first_key + n_kv) of a paged cache.
  template <class Arch>
  [[gnu::noinline]] static void paged(Arch, const float* q, const KvPages& pages,
                                      std::size_t first_key, std::size_t n_kv, std::size_t head_dim,
                                      float scale, float* out, DecodePartial* partial,
                                      const DecodeMods& mods) noexcept {
    with_kv_type(pages.type, [&](auto type) {
      KvSource<decltype(type)::value> src;
      src.pages = &pages;
      src.first_key = first_key;
      if (mods.softcap > 0 || mods.alibi_slope != 0) [[unlikely]] {
        chunk<true>(Arch{}, q, src, n_kv, head_dim, scale, out, partial, mods);
      } else {
        chunk<false>(Arch{}, q, src, n_kv, head_dim, scale, out, partial, mods);
      }
    });
  }

  /// group() over keys [first_key, first_key + n_kv) of a paged cache.
  template <class Arch>
  [[gnu::noinline]] static void group_paged(Arch, const float* q, std::ptrdiff_t ld_q,
                                            std::size_t rows, const KvPages& pages,
                                            std::size_t first_key, std::size_t n_kv,
                                            std::size_t head_dim, float scale, float* out,
                                            std::ptrdiff_t ld_out, DecodePartial* partial,
                                            std::ptrdiff_t ld_partial,
                                            const DecodeMods* mods) noexcept {
    with_kv_type(pages.type, [&](auto type) {
      KvSource<decltype(type)::value> src;
      src.pages = &pages;
      src.first_key = first_key;
      group_src(Arch{}, q, ld_q, rows, src, n_kv, head_dim, scale, out, ld_out, partial, ld_partial,
                mods);
    });
  }

  // Flattened: everything inlined, as when operator() held this code (with a second caller
  // GCC 12 outlined accumulate and its slices).
  template <bool Mod, class Arch, KvType T>
  [[gnu::noinline, gnu::flatten]] static void chunk(Arch, const float* q, const KvSource<T>& src,
                                                    std::size_t n_kv, std::size_t head_dim,
                                                    float scale, float* out, DecodePartial* partial,
                                                    const DecodeMods& mods) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    alignas(64) float s[kSub];
    const float c = scale * kLog2e;
    float m_run = kNegInf, l_run = 0.0f;
    std::fill(out, out + head_dim, 0.0f);
    // Online softmax over sub-blocks of kSub keys, so the K and V streams advance together.
    for (std::size_t j0 = 0; j0 < n_kv; j0 += kSub) {
      const std::size_t n = std::min(kSub, n_kv - j0);
      src.rows(j0, n, [&](auto kc, auto vc) {
        scores(Arch{}, q, kc, n, head_dim, c, s, &vc);
        // Soft-capping / ALiBi: a separate pass over the sub-block's scores, only when asked.
        if constexpr (Mod) {
          modify(Arch{}, ScoreModsLog2(mods.softcap, mods.alibi_slope), s, n,
                 static_cast<float>(mods.key_offset + static_cast<std::int64_t>(j0)));
        }
        const float m_new = std::max(m_run, row_max(Arch{}, s, n));
        const float m_used = m_new == kNegInf ? 0.0f : m_new;
        const float alpha = exp2_fast(B(m_run - m_used)).get(0);
        const float sum = exp_and_sum(Arch{}, s, n, m_used);
        if constexpr (T == KvType::kInt8) scale_by_rows(s, vc, n);
        accumulate(Arch{}, s, vc, n, head_dim, j0 == 0 ? 1.0f : alpha, out);
        l_run = alpha * l_run + sum;
        m_run = m_new;
      });
    }
    partial->max = m_run;
    partial->sum = l_run;
  }

  // The grouped form (DecodeChunkGroup): `rows` queries sharing one kv head, the loop over
  // them inside the loop over sub-blocks (scores_rows, then operator()'s softmax and V steps).
  template <class Arch>
  static void group(Arch, const float* q, std::ptrdiff_t ld_q, std::size_t rows, const float* k,
                    std::ptrdiff_t ld_k, const float* v, std::ptrdiff_t ld_v, std::size_t n_kv,
                    std::size_t head_dim, float scale, float* out, std::ptrdiff_t ld_out,
                    DecodePartial* partial, std::ptrdiff_t ld_partial,
                    const DecodeMods* mods) noexcept {
    group_src(Arch{}, q, ld_q, rows, KvSource<KvType::kF32>{k, ld_k, v, ld_v}, n_kv, head_dim,
              scale, out, ld_out, partial, ld_partial, mods);
  }

  template <class Arch, KvType T>
  static void group_src(Arch, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                        const KvSource<T>& src, std::size_t n_kv, std::size_t head_dim, float scale,
                        float* out, std::ptrdiff_t ld_out, DecodePartial* partial,
                        std::ptrdiff_t ld_partial, const DecodeMods* mods) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    alignas(64) float s[kDecodeGroupMax][kSub];  // 8 KiB
    const float c = scale * kLog2e;
    float m_run[kDecodeGroupMax], l_run[kDecodeGroupMax];
    for (std::size_t g = 0; g < rows; ++g) {
      m_run[g] = kNegInf;
      l_run[g] = 0.0f;
      float* o = out + static_cast<std::ptrdiff_t>(g) * ld_out;
      std::fill(o, o + head_dim, 0.0f);
    }
    for (std::size_t j0 = 0; j0 < n_kv; j0 += kSub) {
      const std::size_t n = std::min(kSub, n_kv - j0);
      src.rows(j0, n, [&](auto kc, auto vc) {
        // Row 0 brings the sub-block's K rows (32 KiB at head_dim 64) from DRAM and the other
        // rows find them in L1; then the same for the V rows (scores of all rows first, so K and
        // V do not evict each other between rows).
        float alpha[kDecodeGroupMax];
        scores_rows(Arch{}, q, ld_q, rows, kc, n, head_dim, c, s, &vc);
        for (std::size_t g = 0; g < rows; ++g) {
          float* sg = s[g];
          if (mods != nullptr) {
            const ScoreModsLog2 mod(mods[g].softcap, mods[g].alibi_slope);
            if (mod.any()) {
              modify(Arch{}, mod, sg, n,
                     static_cast<float>(mods[g].key_offset + static_cast<std::int64_t>(j0)));
            }
          }
          const float m_new = std::max(m_run[g], row_max(Arch{}, sg, n));
          const float m_used = m_new == kNegInf ? 0.0f : m_new;
          alpha[g] = exp2_fast(B(m_run[g] - m_used)).get(0);
          const float sum = exp_and_sum(Arch{}, sg, n, m_used);
          l_run[g] = alpha[g] * l_run[g] + sum;
          m_run[g] = m_new;
        }
        for (std::size_t g = 0; g < rows; ++g) {
          if constexpr (T == KvType::kInt8) scale_by_rows(s[g], vc, n);
          accumulate(Arch{}, s[g], vc, n, head_dim, j0 == 0 ? 1.0f : alpha[g],
                     out + static_cast<std::ptrdiff_t>(g) * ld_out);
        }
      });
    }
    for (std::size_t g = 0; g < rows; ++g) {
      partial[static_cast<std::ptrdiff_t>(g) * ld_partial].max = m_run[g];
      partial[static_cast<std::ptrdiff_t>(g) * ld_partial].sum = l_run[g];
    }
  }

 private:
  // Keys per online-softmax step: the scores of 128 keys, then their 128 V rows, so both
  // DRAM streams advance in runs of 32 KiB (head_dim 64). Measured from DRAM (12 x 8192 keys
  // x 48 heads, single thread): 16 keys 24 GB/s, 32: 30, 64: 32, 128: 33.5, 256: 33.5, 512
  // (the whole chunk's K, then its V): 31.5; a pure K+V read stream reaches ~40.
  static constexpr std::size_t kSub = 128;

  // s[j] = c * (q · k_j) for j < n: W keys at a time (W independent FMA chains), one
  // horizontal sum per key (~7 ops, small next to its 256+ bytes of K), stored as a vector.
  // (8-key groups with scalar stores measured 25% slower in L2.)
  //
  // A 16- or 8-bit cache takes the form with NV = head_dim / W vectors known at compile time
  // (q in registers, the loop over a row unrolled): with the run-time loop and the widening
  // in it, GCC 12 kept each key's accumulator in memory (a store and a reload per FMA). The
  // FMA order is the same, so are the bits.
  template <class Arch, class Rows>
  static void scores(Arch, const float* q, const Rows& k, std::size_t n, std::size_t head_dim,
                     float c, float* s, const Rows* v_ahead = nullptr) noexcept {
    constexpr std::size_t W = xsimd::batch<float, Arch>::size;
    if constexpr (Rows::kType != KvType::kF32) {
      const std::size_t nv = head_dim / W;
      if (nv >= 1 && nv <= kSlice) {
        with_count<Arch>(nv, [&](auto count) {
          scores_n<Arch, decltype(count)::value>(q, k, n, head_dim, c, s, v_ahead);
        });
        return;
      }
    }
    scores_n<Arch, 0>(q, k, n, head_dim, c, s, v_ahead);
  }

  // Asks for the cache lines of [p, p + bytes). The score loops call it on each key's value
  // row (v_ahead), which the same sub-block reads right after its scores: with only the
  // hardware prefetchers the V stream restarted cold after every K run of 128 rows. Measured
  // (BM_DecodeCacheType, 12 heads x 16384 keys from DRAM, 1 thread, alternated runs): f32
  // 12.6-16.5 ms without, 9.7-10.8 with (~the read probe); bf16 7.6-9.6 -> 4.9-5.9; f16
  // 6.2-8.7 -> 4.8; int8 4.3-6.6 -> 3.2-3.6. Prefetching rows of the same stream 16 or 48
  // ahead made no measurable difference.
  static void prefetch_lines(const void* p, std::size_t bytes) noexcept {
    const auto* c = static_cast<const char*>(p);
    for (std::size_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b);
  }

  // scores() with NV vectors per row (0: head_dim / W at run time).
  template <class Arch, std::size_t NV, class Rows>
  static void scores_n(const float* q, const Rows& k, std::size_t n, std::size_t head_dim, float c,
                       float* s, const Rows* v_ahead) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr KvType T = Rows::kType;
    constexpr std::size_t W = B::size;
    const std::size_t hd_vec = head_dim / W * W;
    B qv[NV > 0 ? NV : 1];
    if constexpr (NV > 0) {
      for (std::size_t i = 0; i < NV; ++i) qv[i] = B::load_unaligned(q + i * W);
    }
    std::size_t j = 0;
    for (; j + W <= n; j += W) {
      B acc[W];
      // Key by key, in address order (one row pointer; the out-of-order core overlaps the W
      // independent chains). Measured from DRAM: 16 rows at once (16 row pointers) or 4 rows
      // at once are faster in L2 but ~15% slower from DRAM, where only this order counts.
      for (std::size_t r = 0; r < W; ++r) {
        const auto* kr = k(j + r);
        if (v_ahead != nullptr) prefetch_lines((*v_ahead)(j + r), head_dim * sizeof(*kr));
        acc[r] = B(0.0f);
        if constexpr (NV > 0) {
          for (std::size_t i = 0; i < NV; ++i)
            acc[r] = xsimd::fma(load_kv<T, Arch>(kr + i * W), qv[i], acc[r]);
        } else {
          for (std::size_t d = 0; d < hd_vec; d += W) {
            acc[r] = xsimd::fma(load_kv<T, Arch>(kr + d), B::load_unaligned(q + d), acc[r]);
          }
        }
      }
      alignas(64) float dots[W];
      for (std::size_t r = 0; r < W; ++r) dots[r] = xsimd::hadd(acc[r]);
      if (hd_vec < head_dim) {
        for (std::size_t r = 0; r < W; ++r) {
          const auto* kr = k(j + r);
          for (std::size_t d = hd_vec; d < head_dim; ++d)
            dots[r] += q[d] * kv_scalar<T, Arch>(kr + d);
        }
      }
      if constexpr (T == KvType::kInt8) {  // the keys' scales, after the integer-valued dots
        alignas(64) float ks[W];
        for (std::size_t r = 0; r < W; ++r) ks[r] = k.scale(j + r);
        (B::load_aligned(dots) * B::load_aligned(ks) * B(c)).store_aligned(s + j);
      } else {
        (B::load_aligned(dots) * B(c)).store_aligned(s + j);
      }
    }
    for (; j < n; ++j) {
      const auto* kr = k(j);
      B acc(0.0f);
      for (std::size_t d = 0; d < hd_vec; d += W) {
        acc = xsimd::fma(load_kv<T, Arch>(kr + d), B::load_unaligned(q + d), acc);
      }
      float t = xsimd::hadd(acc);
      for (std::size_t d = hd_vec; d < head_dim; ++d) t += q[d] * kv_scalar<T, Arch>(kr + d);
      if constexpr (T == KvType::kInt8) t *= k.scale(j);
      s[j] = t * c;
    }
  }

  // s[j] = mod(s[j]) with key j at rel0 + j positions from the query (s is kSub-padded).
  template <class Arch>
  static void modify(Arch, const ScoreModsLog2& mod, float* s, std::size_t n, float rel0) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    alignas(64) float iota[W];
    for (std::size_t i = 0; i < W; ++i) iota[i] = static_cast<float>(i);
    const B lane = B::load_aligned(iota);
    std::size_t j = 0;
    for (; j + W <= n; j += W) {
      const B rel = B(rel0 + static_cast<float>(j)) + lane;
      mod.apply(B::load_aligned(s + j), rel).store_aligned(s + j);
    }
    for (; j < n; ++j) s[j] = mod.apply(B(s[j]), B(rel0 + static_cast<float>(j))).get(0);
  }

  // s[g][j] = c * (q_g · k_j) for rows g and keys j < n (the grouped path): each K row is
  // loaded into registers once for all rows (head_dim a multiple of W, up to kSlice vectors;
  // otherwise scores() per row), and each row's W dot products over W keys are reduced
  // together with haddp instead of one horizontal sum each. Not the bits of scores(): the
  // horizontal reduction order differs.
  template <class Arch, class Rows>
  static void scores_rows(Arch, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                          const Rows& k, std::size_t n, std::size_t head_dim, float c,
                          float (*s)[kSub], const Rows* v_ahead = nullptr) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr KvType T = Rows::kType;
    constexpr std::size_t W = B::size;
    const std::size_t nv = head_dim / W;
    if (nv == 0 || nv * W != head_dim || nv > kSlice) {
      for (std::size_t g = 0; g < rows; ++g)
        scores(Arch{}, q + static_cast<std::ptrdiff_t>(g) * ld_q, k, n, head_dim, c, s[g],
               g == 0 ? v_ahead : nullptr);
      return;
    }
    with_count<Arch>(nv, [&](auto count) {
      constexpr std::size_t NV = decltype(count)::value;
      B acc[kDecodeGroupMax][W];
      std::size_t j = 0;
      for (; j + W <= n; j += W) {
        for (std::size_t r = 0; r < W; ++r) {
          const auto* kr = k(j + r);
          if (v_ahead != nullptr) prefetch_lines((*v_ahead)(j + r), head_dim * sizeof(*kr));
          B kv[NV];
          for (std::size_t i = 0; i < NV; ++i) kv[i] = load_kv<T, Arch>(kr + i * W);
          for (std::size_t g = 0; g < rows; ++g) {
            const float* qg = q + static_cast<std::ptrdiff_t>(g) * ld_q;
            B a = kv[0] * B::load_unaligned(qg);
            for (std::size_t i = 1; i < NV; ++i)
              a = xsimd::fma(kv[i], B::load_unaligned(qg + i * W), a);
            acc[g][r] = a;
          }
        }
        if constexpr (T == KvType::kInt8) {
          alignas(64) float ks[W];
          for (std::size_t r = 0; r < W; ++r) ks[r] = k.scale(j + r);
          const B kc = B::load_aligned(ks) * B(c);
          for (std::size_t g = 0; g < rows; ++g) (hsum_rows(acc[g]) * kc).store_aligned(s[g] + j);
        } else {
          for (std::size_t g = 0; g < rows; ++g) (hsum_rows(acc[g]) * B(c)).store_aligned(s[g] + j);
        }
      }
      for (; j < n; ++j) {
        const auto* kr = k(j);
        float cj = c;
        if constexpr (T == KvType::kInt8) cj = k.scale(j) * c;
        for (std::size_t g = 0; g < rows; ++g) {
          const float* qg = q + static_cast<std::ptrdiff_t>(g) * ld_q;
          B a(0.0f);
          for (std::size_t i = 0; i < NV; ++i)
            a = xsimd::fma(load_kv<T, Arch>(kr + i * W), B::load_unaligned(qg + i * W), a);
          s[g][j] = xsimd::hadd(a) * cj;
        }
      }
    });
  }

  template <class Arch>
  static float row_max(Arch, const float* s, std::size_t n) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    B vmax(-std::numeric_limits<float>::infinity());
    std::size_t j = 0;
    for (; j + W <= n; j += W) vmax = max_nan_b(vmax, B::load_aligned(s + j));
    float m = hmax(vmax);
    for (; j < n; ++j) m = m > s[j] ? m : s[j];
    return m;
  }

  // s[j] = exp2(s[j] - m); returns the sum.
  template <class Arch>
  static float exp_and_sum(Arch, float* s, std::size_t n, float m) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    B vsum(0.0f);
    std::size_t j = 0;
    for (; j + W <= n; j += W) {
      const B p = exp2_fast(B::load_aligned(s + j) - B(m));
      p.store_aligned(s + j);
      vsum += p;
    }
    float sum = xsimd::hadd(vsum);
    for (; j < n; ++j) {
      s[j] = exp2_fast(B(s[j] - m)).get(0);
      sum += s[j];
    }
    return sum;
  }

  // out = alpha * out + sum_j p[j] * v_j over n keys.
  // p[j] *= scale_j (int8 values: the weights take the rows' scales, after their sum).
  template <class Rows>
  static void scale_by_rows(float* p, const Rows& v, std::size_t n) noexcept {
    for (std::size_t j = 0; j < n; ++j) p[j] *= v.scale(j);
  }

  template <class Arch, class Rows>
  static void accumulate(Arch, const float* p, const Rows& v, std::size_t n, std::size_t head_dim,
                         float alpha, float* out) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    if (alpha != 1.0f) {  // the max grew: rescale what was accumulated
      for (std::size_t d = 0; d < head_dim; ++d) out[d] *= alpha;
    }
    const std::size_t hd_vec = head_dim / W * W;
    for (std::size_t d0 = 0; d0 < hd_vec; d0 += kSlice * W) {
      const std::size_t nv = std::min(kSlice, (hd_vec - d0) / W);
      with_count<Arch>(
          nv, [&](auto c) { accumulate_slice<Arch, decltype(c)::value>(p, v, d0, n, out + d0); });
    }
    for (std::size_t d = hd_vec; d < head_dim; ++d) {
      float o = out[d];
      for (std::size_t j = 0; j < n; ++j) o += p[j] * kv_scalar<Rows::kType, Arch>(v(j) + d);
      out[d] = o;
    }
  }

  // Vectors per head-dim slice: 8 (a whole row of head_dim 64 on AVX-512, 64 dims on AVX2),
  // so V is read in address order; with 4 vectors per slice AVX2 read each row in two passes
  // and reached 18 instead of ~30 GB/s from DRAM.
  static constexpr std::size_t kSlice = 8;

  template <class Arch, class F>
  static void with_count(std::size_t n, F&& f) noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((n == I + 1 ? (f(std::integral_constant<std::size_t, I + 1>{}), 0) : 0), ...);
    }
    (std::make_index_sequence<kSlice>{});
  }

  // NV vectors of out += sum_j p[j] * v_j[0 : NV * W]. At least 8 independent FMA chains
  // hide the FMA latency: below 8 vectors even and odd keys feed two sets of accumulators.
  template <class Arch, std::size_t NV, class Rows>
  static void accumulate_slice(const float* p, const Rows& v, std::size_t d0, std::size_t n,
                               float* out) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    constexpr std::size_t kSets = NV >= 8 ? 1 : 2;
    B acc[kSets][NV];
    for (std::size_t i = 0; i < NV; ++i) {
      acc[0][i] = B::load_unaligned(out + i * W);
      if constexpr (kSets == 2) acc[1][i] = B(0.0f);
    }
    std::size_t j = 0;
    for (; j + kSets <= n; j += kSets) {
      for (std::size_t t = 0; t < kSets; ++t) {
        const B pj(p[j + t]);
        const auto* row = v(j + t) + d0;
        for (std::size_t i = 0; i < NV; ++i)
          acc[t][i] = xsimd::fma(pj, load_kv<Rows::kType, Arch>(row + i * W), acc[t][i]);
      }
    }
    if (j < n) {
      const B pj(p[j]);
      const auto* vj = v(j) + d0;
      for (std::size_t i = 0; i < NV; ++i)
        acc[0][i] = xsimd::fma(pj, load_kv<Rows::kType, Arch>(vj + i * W), acc[0][i]);
    }
    for (std::size_t i = 0; i < NV; ++i) {
      if constexpr (kSets == 2) acc[0][i] += acc[1][i];
      acc[0][i].store_unaligned(out + i * W);
    }
  }
};

struct DecodeChunkGroup {
  /// rows (<= kDecodeGroupMax) queries sharing one kv head against one chunk: each
  /// sub-block's K and V rows come from DRAM once for all rows (see DecodeChunk::group).
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                                    const float* k, std::ptrdiff_t ld_k, const float* v,
                                    std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim,
                                    float scale, float* out, std::ptrdiff_t ld_out,
                                    DecodePartial* partial, std::ptrdiff_t ld_partial,
                                    const DecodeMods* mods) const noexcept {
    DecodeChunk::group(Arch{}, q, ld_q, rows, k, ld_k, v, ld_v, n_kv, head_dim, scale, out, ld_out,
                       partial, ld_partial, mods);
  }
};

struct DecodeMerge {
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* outs, const DecodePartial* parts,
                                    std::size_t n_chunks, std::size_t head_dim,
                                    float* out) const noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    float m = kNegInf;
    for (std::size_t c = 0; c < n_chunks; ++c) m = std::max(m, parts[c].max);
    const float m_used = m == kNegInf ? 0.0f : m;
    std::fill(out, out + head_dim, 0.0f);
    float l = 0.0f;
    const std::size_t hd_vec = head_dim / W * W;
    for (std::size_t c = 0; c < n_chunks; ++c) {
      // exp2(-inf) = 0 for an empty chunk; 0 * NaN keeps a NaN chunk NaN.
      const float w = exp2_fast(B(parts[c].max - m_used)).get(0);
      l += w * parts[c].sum;
      const float* oc = outs + c * head_dim;
      std::size_t d = 0;
      for (; d < hd_vec; d += W) {
        xsimd::fma(B(w), B::load_unaligned(oc + d), B::load_unaligned(out + d))
            .store_unaligned(out + d);
      }
      for (; d < head_dim; ++d) out[d] += w * oc[d];
    }
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    for (std::size_t d = 0; d < head_dim; ++d) out[d] *= inv;
  }
};

}  // namespace attn::kernels
