// GEMM kernels, C = A · Bᵀ + bias, templated on the xsimd architecture.
//
// Algorithm (BLIS: Van Zee & van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS
// Functionality", 2015; block sizes after Low et al., "Analytical Modeling Is Enough for
// High-Performance BLIS", 2016). B is packed once into kNr-wide column panels (gemm_pack.hpp).
// A call computes C[0:m, n0:n0+n] as
//   for ic in m by kMc:                 A block rows
//     for pc in k by kc (<= kKc):       k passes; kc depends on k only (determinism)
//       pack A[ic:ic+kMc, pc:pc+kc]     into kMr-row micro-panels in scratch (stays in L2)
//       for jr in n by kNr:             B micro-panel [kc][kNr], reused from L1/L2 by ir
//         for ir in kMc by kMr:         micro-kernel: kMr x kNr tile held in registers
// The micro-kernel loads kNv B vectors per k step and broadcasts each A element into kNv
// FMAs, so there are kMr * kNv FMAs per kNv + kMr loads; C is read and written once per pass,
// and the bias is added in the first pass's store. The last rows of a block run the same
// micro-kernel instantiated for fewer rows; the last columns run it on a local tile and copy
// the valid part, so nothing outside C[0:m, n0:n0+n] (or past the bias) is read or written.
//
// 16-bit weights (WeightType kBf16, kF16): the same driver with B panels of 16-bit elements;
// the micro-kernel widens each B vector to f32 as it loads it (impl/widen.hpp), so the FMA
// chains, and the bits, are those of the f32 kernel on the widened weights. Half the bytes
// of B per FMA: the win for small m (decode), where B streams from memory.
//
// Determinism: C[i, j] = ((bias_j + Σ_pass0) + Σ_pass1) + ..., each Σ a chain of FMAs (SSE2:
// multiply, add) in k order in one vector lane; the passes depend only on k, and edge tiles use the
// same code, so the bits do not depend on the caller's (m0, n0) split.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "kernels/impl/gemm_pack.hpp"
#include "kernels/impl/widen.hpp"
#include "kernels/kernels.hpp"

namespace attn::kernels {

template <class Arch, class Blk = GemmBlocking<Arch>, WeightType kB = WeightType::kF32>
struct GemmDriver {
  using Batch = typename Blk::Batch;
  using BElem = std::conditional_t<kB == WeightType::kF32, float, std::uint16_t>;
  using Pack = GemmPacking<Arch, Blk>;
  static constexpr std::size_t kW = Blk::kW, kNv = Blk::kNv, kNr = Blk::kNr, kMr = Blk::kMr;
  static constexpr std::size_t kKc = Blk::kKc, kMc = Blk::kMc, kAStride = Blk::kAStride,
                               kAExpand = Blk::kAExpand;

  // Calls f(integral_constant<i>) for i = 0 .. N-1, fully unrolled at compile time.
  template <std::size_t N, class F>
  [[gnu::always_inline]] static inline void unroll(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::integral_constant<std::size_t, I>{}), ...);
    }
    (std::make_index_sequence<N>{});
  }

  // The k split: passes of at most kKc, as equal as possible (no short last pass).
  static std::size_t kc_step(std::size_t k) noexcept {
    const std::size_t passes = (k + kKc - 1) / kKc;
    return (k + passes - 1) / passes;
  }

  // C tile [R, kNr] at c (row stride ldc) = (first ? bias : C) + A micro-panel · B micro-panel
  // over kc steps; bias: kNr floats or null. R = kMr except for the last rows of a block:
  // fewer rows do less work (a 1-row GEMM is 1/kMr of the FLOPs) and give the same bits per
  // row, since every element is its own FMA chain.
  // One B vector of kW columns at b, as f32.
  [[gnu::always_inline]] static inline Batch load_b(const BElem* b) noexcept {
    if constexpr (kB == WeightType::kF32) {
      return Batch::load_aligned(b);
    } else if constexpr (kB == WeightType::kBf16) {
      return Widen16<Arch>::bf16(b);
    } else {
      return Widen16<Arch>::f16(b);
    }
  }

  template <std::size_t R>
  [[gnu::noinline]] static void micro_tile(std::size_t kc, const float* a, const BElem* b, float* c,
                                           std::ptrdiff_t ldc, const float* bias,
                                           bool first) noexcept {
    Batch acc[R][kNv];
    unroll<R>([&](auto r) { unroll<kNv>([&](auto v) { acc[r][v] = Batch(0.0f); }); });
    // C is written at the end; start fetching its lines now (first-pass stores miss).
    unroll<R>([&](auto r) {
      __builtin_prefetch(c + r * ldc, 1);
      __builtin_prefetch(c + r * ldc + kNr - 1, 1);
    });
#pragma GCC unroll 4
    for (std::size_t p = 0; p < kc; ++p) {
      Batch bv[kNv];
      unroll<kNv>([&](auto v) { bv[v] = load_b(b + v * kW); });
      unroll<R>([&](auto r) {
        Batch av;
        if constexpr (kAExpand == 1) {
          av = Batch(a[r * kAStride]);
        } else {
          av = Batch::load_aligned(a + r * kAStride * kAExpand);
        }
        unroll<kNv>([&](auto v) { acc[r][v] = xsimd::fma(av, bv[v], acc[r][v]); });
      });
      a += kAExpand;
      b += kNr;
    }
    if (!first) {
      unroll<R>([&](auto r) {
        unroll<kNv>([&](auto v) {
          float* cp = c + r * ldc + v * kW;
          (Batch::load_unaligned(cp) + acc[r][v]).store_unaligned(cp);
        });
      });
    } else if (bias != nullptr) {
      unroll<kNv>([&](auto v) {
        const Batch bb = Batch::load_unaligned(bias + v * kW);
        unroll<R>([&](auto r) { (bb + acc[r][v]).store_unaligned(c + r * ldc + v * kW); });
      });
    } else {
      unroll<R>([&](auto r) {
        unroll<kNv>([&](auto v) { acc[r][v].store_unaligned(c + r * ldc + v * kW); });
      });
    }
  }

  using TileFn = void (*)(std::size_t, const float*, const BElem*, float*, std::ptrdiff_t,
                          const float*, bool) noexcept;
  // kTiles[r - 1] computes r rows.
  static constexpr auto kTiles = []<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<TileFn, kMr>{&micro_tile<I + 1>...};
  }
  (std::make_index_sequence<kMr>{});

  // A tile narrower than kNr (the last columns): the same micro-kernel on a local tile, so the
  // arithmetic (and the bits) match a full tile and nothing past column nr is touched.
  static void narrow_tile(TileFn tile_fn, std::size_t kc, const float* a, const BElem* b, float* c,
                          std::ptrdiff_t ldc, const float* bias, bool first, std::size_t mr,
                          std::size_t nr) noexcept {
    alignas(64) float tile[kMr * kNr] = {};  // columns past nr are read (C + acc), never used
    alignas(64) float bias_tile[kNr] = {};
    if (!first) {
      for (std::size_t r = 0; r < mr; ++r) std::copy_n(c + r * ldc, nr, tile + r * kNr);
    }
    if (bias != nullptr) std::copy_n(bias, nr, bias_tile);
    tile_fn(kc, a, b, tile, kNr, bias != nullptr ? bias_tile : nullptr, first);
    for (std::size_t r = 0; r < mr; ++r) std::copy_n(tile + r * kNr, nr, c + r * ldc);
  }

  static const BElem* packed_b(const GemmArgs& g) noexcept {
    if constexpr (kB == WeightType::kF32) {
      return g.packed_b;
    } else {
      return g.packed_b16;
    }
  }

  static void run(const GemmArgs& g) noexcept {
    if (g.m == 0 || g.n == 0) return;
    const std::size_t n_end = g.n0 + g.n;
    if (g.k == 0) {
      for (std::size_t i = 0; i < g.m; ++i) {
        for (std::size_t j = g.n0; j < n_end; ++j) g.c[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
      }
      return;
    }
    const std::size_t step = kc_step(g.k);
    for (std::size_t ic = 0; ic < g.m; ic += kMc) {
      const std::size_t mc = std::min(kMc, g.m - ic);
      for (std::size_t pc = 0; pc < g.k; pc += step) {
        const std::size_t kc = std::min(step, g.k - pc);
        const bool first = pc == 0;
        Pack::pack_a(g.a + static_cast<std::ptrdiff_t>(ic) * g.lda + pc, g.lda, mc, kc, g.scratch,
                     g.round_a_bf16);
        for (std::size_t jr = g.n0; jr < n_end; jr += kNr) {
          const std::size_t nr = std::min(kNr, n_end - jr);
          const BElem* bp = packed_b(g) + jr * g.k + pc * kNr;
          const float* bias = (first && g.bias != nullptr) ? g.bias + jr : nullptr;
          for (std::size_t ir = 0; ir < mc; ir += kMr) {
            const std::size_t mr = std::min(kMr, mc - ir);
            const float* ap = g.scratch + ir * kAStride * kAExpand;
            float* cp = g.c + static_cast<std::ptrdiff_t>(ic + ir) * g.ldc + jr;
            if (nr == kNr) {
              kTiles[mr - 1](kc, ap, bp, cp, g.ldc, bias, first);
            } else {
              narrow_tile(kTiles[mr - 1], kc, ap, bp, cp, g.ldc, bias, first, mr, nr);
            }
          }
        }
      }
    }
  }
};

struct GemmPackB {
  template <class Arch>
  static std::size_t packed_floats(Arch, std::size_t n, std::size_t k) noexcept {
    return GemmPacking<Arch>::packed_floats(n, k);
  }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                                    std::size_t n, std::size_t k, float* packed) const noexcept {
    GemmPacking<Arch>::pack_b(b, rs_n, rs_k, n, k, packed);
  }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const std::uint16_t* b, std::ptrdiff_t rs_n,
                                    std::ptrdiff_t rs_k, std::size_t n, std::size_t k,
                                    std::uint16_t* packed) const noexcept {
    GemmPacking<Arch>::pack_b16(b, rs_n, rs_k, n, k, packed);
  }
};

struct Gemm {
  template <class Arch>
  static std::size_t n_step(Arch) noexcept {
    return GemmBlocking<Arch>::kNr;
  }
  template <class Arch>
  static std::size_t scratch_floats(Arch) noexcept {
    return GemmBlocking<Arch>::kMc * GemmBlocking<Arch>::kAStride * GemmBlocking<Arch>::kAExpand;
  }
  template <class Arch>
  static GemmBlock task_block(Arch) noexcept {
    return {GemmBlocking<Arch>::kTaskM, GemmBlocking<Arch>::kTaskN};
  }
  template <class Arch>
  [[gnu::noinline]] void operator()(Arch, const GemmArgs& g) const noexcept {
    switch (g.b_type) {
      case WeightType::kF32:
        return GemmDriver<Arch>::run(g);
      case WeightType::kBf16:
        return GemmDriver<Arch, GemmBlocking<Arch>, WeightType::kBf16>::run(g);
      case WeightType::kF16:
        return GemmDriver<Arch, GemmBlocking<Arch>, WeightType::kF16>::run(g);
    }
  }
};

}  // namespace attn::kernels
