// The bf16 dot-product GEMM (compute_dtype bf16): C = A · Bᵀ + bias with A rounded to bfloat16
// as it is packed, B packed in bfloat16 pairs, products summed in f32 two k steps at a time,
// as AVX512-BF16's vdpbf16ps does. Written once over a small "Ops" type (the vector
// operations), so the same driver runs on vdpbf16ps (arch/gemm_avx512bf16.cpp) and on a plain
// scalar emulation of it (dispatch.cpp), which the tests run on every machine.
//
// Algorithm: the BLIS loops of impl/gemm.hpp (see there), with k counted in pairs. The
// micro-kernel holds a kMr x 32 tile in 2 x kMr 16-lane accumulators; per k pair it loads two
// B vectors (32 columns x 2 k, 128 bytes) and, for each row, broadcasts that row's bf16 pair
// (32 bits) into two vdpbf16ps: 2 x kMr instructions (128 x kMr FLOPs) per 2 + kMr loads.
// Half the bytes of the f32 kernel per FLOP on both operands, twice the FLOPs per instruction.
//
// Packed B: panels of 32 columns; panel q holds columns 32q .. 32q + 31 as [k2][32][2]
// (k2 = k rounded up to even, halved): element (j, p) at q*32*k2*2 + (p/2)*64 + (j%32)*2 + p%2,
// zero-padded past n and past k. Packed A: an [mc, kc] block as micro-panels of kMr rows, each
// row kc bf16 (plus one zero when kc is odd) at a fixed stride of kAStride pairs.
//
// Determinism: C[i, j] = ((bias_j + Σ_pass0) + Σ_pass1) + ..., each Σ one chain of pair
// dot-products in k order; pass lengths are even and depend on k only, edge tiles run the same
// micro-kernel, so the bits do not depend on the caller's (m0, n0) split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct GemmDotBlocking {
  static constexpr std::size_t kW = 16;  // f32 lanes per accumulator (one zmm)
  static constexpr std::size_t kNv = 2;
  static constexpr std::size_t kNr = kNv * kW;  // 32: divides head_dim 64 and d_model 768
  // 24 accumulators + 2 B vectors + 1 broadcast of 32 zmm registers, as the f32 AVX-512 kernel;
  // vdpbf16ps has the FMA's latency and throughput class on Zen 4 and Sapphire Rapids.
  static constexpr std::size_t kMr = 12;
  // Largest k per pass (even). One pass for k = 768 as in the f32 kernel; the B micro-panel is
  // half its bytes (768 x 32 x 2 B = 48 KiB).
  static constexpr std::size_t kKc = 768;
  static constexpr std::size_t kMc = 96;
  // Row stride of a packed A micro-panel, in bf16 pairs (uint32): one line over kKc / 2.
  static constexpr std::size_t kAStride = kKc / 2 + 16;
  static constexpr std::size_t kTaskM = 96;
  static constexpr std::size_t kTaskN = 768;

  static constexpr std::size_t scratch_floats() noexcept { return kMc * kAStride; }
  static constexpr std::size_t k_pairs(std::size_t k) noexcept { return (k + 1) / 2; }
  static constexpr std::size_t packed_elems(std::size_t n, std::size_t k) noexcept {
    return (n + kNr - 1) / kNr * kNr * k_pairs(k) * 2;
  }
};

// Ops: Acc (16 f32 lanes), APair (one bf16 pair broadcast), BVec (16 bf16 pairs) and
//   zero(), load(const float*), store(float*, Acc), add(Acc, Acc)   unaligned f32 vectors
//   load_b(const uint16_t*)            16 pairs, 64-byte aligned
//   bcast_a(const uint16_t*)           one pair (two bf16, read with memcpy) to every lane
//   dot(Acc, APair, BVec)              acc[i] += a.hi * b[i].hi, then += a.lo * b[i].lo
//   narrow(const float* s, size_t n, uint16_t* d)   n floats to bf16, nearest even
template <class Ops>
struct GemmDotDriver {
  using Blk = GemmDotBlocking;
  using Acc = typename Ops::Acc;
  static constexpr std::size_t kW = Blk::kW, kNv = Blk::kNv, kNr = Blk::kNr, kMr = Blk::kMr;
  static constexpr std::size_t kKc = Blk::kKc, kMc = Blk::kMc, kAStride = Blk::kAStride;

  // A compile-time index. Nested here (not std::integral_constant) so that nothing this
  // template instantiates is shared between the AVX512-BF16 object and the others, even
  // uninlined at -O0 (tools/check_isa_symbols.sh).
  template <std::size_t I>
  struct Idx {
    static constexpr std::size_t value = I;
    constexpr operator std::size_t() const noexcept { return I; }  // NOLINT: implicit by design
  };

  template <std::size_t N, class F>
  [[gnu::always_inline]] static inline void unroll(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f(Idx<I>{}), ...); }
    (std::make_index_sequence<N>{});
  }

  static std::size_t min_sz(std::size_t a, std::size_t b) noexcept { return a < b ? a : b; }

  // The k split: passes of at most kKc, as equal as possible, each even but the last.
  static std::size_t kc_step(std::size_t k) noexcept {
    const std::size_t passes = (k + kKc - 1) / kKc;
    const std::size_t step = (k + passes - 1) / passes;
    return step + (step & 1);
  }

  // C tile [R, kNr] = (first ? bias : C) + A micro-panel · B micro-panel over kc2 pairs.
  // A: kc2 bf16 pairs per row, rows kAStride pairs apart (read as pairs by Ops::bcast_a).
  template <std::size_t R>
  [[gnu::noinline]] static void micro_tile(std::size_t kc2, const std::uint16_t* a,
                                           const std::uint16_t* b, float* c, std::ptrdiff_t ldc,
                                           const float* bias, bool first) noexcept {
    Acc acc[R][kNv];
    unroll<R>([&](auto r) { unroll<kNv>([&](auto v) { acc[r][v] = Ops::zero(); }); });
    unroll<R>([&](auto r) {
      __builtin_prefetch(c + r * ldc, 1);
      __builtin_prefetch(c + r * ldc + kNr - 1, 1);
    });
#pragma GCC unroll 4
    for (std::size_t p = 0; p < kc2; ++p) {
      typename Ops::BVec bv[kNv];
      unroll<kNv>([&](auto v) { bv[v] = Ops::load_b(b + v * kW * 2); });
      unroll<R>([&](auto r) {
        const typename Ops::APair av = Ops::bcast_a(a + r * kAStride * 2);
        unroll<kNv>([&](auto v) { acc[r][v] = Ops::dot(acc[r][v], av, bv[v]); });
      });
      a += 2;
      b += kNr * 2;
    }
    if (!first) {
      unroll<R>([&](auto r) {
        unroll<kNv>([&](auto v) {
          float* cp = c + r * ldc + v * kW;
          Ops::store(cp, Ops::add(Ops::load(cp), acc[r][v]));
        });
      });
    } else if (bias != nullptr) {
      unroll<kNv>([&](auto v) {
        const Acc bb = Ops::load(bias + v * kW);
        unroll<R>([&](auto r) { Ops::store(c + r * ldc + v * kW, Ops::add(bb, acc[r][v])); });
      });
    } else {
      unroll<R>([&](auto r) {
        unroll<kNv>([&](auto v) { Ops::store(c + r * ldc + v * kW, acc[r][v]); });
      });
    }
  }

  using TileFn = void (*)(std::size_t, const std::uint16_t*, const std::uint16_t*, float*,
                          std::ptrdiff_t, const float*, bool) noexcept;
  static TileFn tile_fn(std::size_t rows) noexcept {
    TileFn fns[kMr] = {};
    unroll<kMr>([&](auto i) { fns[i] = &micro_tile<i + 1>; });
    return fns[rows - 1];
  }

  // The last columns: the same micro-kernel on a local tile (same bits, nothing past nr touched).
  static void narrow_tile(TileFn fn, std::size_t kc2, const std::uint16_t* a,
                          const std::uint16_t* b, float* c, std::ptrdiff_t ldc, const float* bias,
                          bool first, std::size_t mr, std::size_t nr) noexcept {
    alignas(64) float tile[kMr * kNr] = {};
    alignas(64) float bias_tile[kNr] = {};
    if (!first) {
      for (std::size_t r = 0; r < mr; ++r) {
        for (std::size_t j = 0; j < nr; ++j) tile[r * kNr + j] = c[r * ldc + j];
      }
    }
    if (bias != nullptr) {
      for (std::size_t j = 0; j < nr; ++j) bias_tile[j] = bias[j];
    }
    fn(kc2, a, b, tile, kNr, bias != nullptr ? bias_tile : nullptr, first);
    for (std::size_t r = 0; r < mr; ++r) {
      for (std::size_t j = 0; j < nr; ++j) c[r * ldc + j] = tile[r * kNr + j];
    }
  }

  // Rows of a [mc, kc] block of A to bf16 micro-panels (an odd kc gets a zero partner).
  // Element p of a row at h[p]: the pair (p, p + 1) is one little-endian 32-bit word with p
  // in its low half, as vdpbf16ps pairs them.
  static void pack_a(const float* a, std::ptrdiff_t lda, std::size_t mc, std::size_t kc,
                     std::uint16_t* dst) noexcept {
    for (std::size_t i = 0; i < mc; ++i) {
      std::uint16_t* h = dst + ((i / kMr) * kMr + i % kMr) * kAStride * 2;
      Ops::narrow(a + static_cast<std::ptrdiff_t>(i) * lda, kc, h);
      if (kc & 1) h[kc] = 0;
    }
  }

  // g.b_type must be kBf16 and g.packed_b16 come from gemm_dot_pack_b; g.scratch holds
  // Blk::scratch_floats() floats.
  static void run(const GemmArgs& g) noexcept {
    if (g.m == 0 || g.n == 0) return;
    const std::size_t n_end = g.n0 + g.n;
    if (g.k == 0) {
      for (std::size_t i = 0; i < g.m; ++i) {
        for (std::size_t j = g.n0; j < n_end; ++j) g.c[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
      }
      return;
    }
    const std::size_t step = kc_step(g.k), k2 = (g.k + 1) / 2;
    auto* scratch = reinterpret_cast<std::uint16_t*>(g.scratch);
    for (std::size_t ic = 0; ic < g.m; ic += kMc) {
      const std::size_t mc = min_sz(kMc, g.m - ic);
      for (std::size_t pc = 0; pc < g.k; pc += step) {
        const std::size_t kc = min_sz(step, g.k - pc), kc2 = (kc + 1) / 2;
        const bool first = pc == 0;
        pack_a(g.a + static_cast<std::ptrdiff_t>(ic) * g.lda + pc, g.lda, mc, kc, scratch);
        for (std::size_t jr = g.n0; jr < n_end; jr += kNr) {
          const std::size_t nr = min_sz(kNr, n_end - jr);
          const std::uint16_t* bp = g.packed_b16 + jr * k2 * 2 + pc * kNr;
          const float* bias = (first && g.bias != nullptr) ? g.bias + jr : nullptr;
          for (std::size_t ir = 0; ir < mc; ir += kMr) {
            const std::size_t mr = min_sz(kMr, mc - ir);
            const std::uint16_t* ap = scratch + ir * kAStride * 2;
            float* cp = g.c + static_cast<std::ptrdiff_t>(ic + ir) * g.ldc + jr;
            if (nr == kNr) {
              tile_fn(mr)(kc2, ap, bp, cp, g.ldc, bias, first);
            } else {
              narrow_tile(tile_fn(mr), kc2, ap, bp, cp, g.ldc, bias, first, mr, nr);
            }
          }
        }
      }
    }
  }
};

}  // namespace attn::kernels
