// GEMM blocking constants per architecture and the packing of B (once) and A (per block).
//
// Packed B: panels of kNr columns, panel q holding columns q*kNr .. q*kNr + kNr - 1 as
// [k][kNr] (column index fastest), zero-padded past n. Panel q starts at q * kNr * k, so the
// micro-panel (rows pc .. pc + kc - 1 of k) the micro-kernel reads is contiguous and
// vector-aligned when `packed` is 64-byte aligned (kNr * 4 bytes is a multiple of 32).
// Packed A: an [mc, kc] block as micro-panels of kMr rows, each row a copy of kc floats at a
// fixed stride kAStride (the last micro-panel may have fewer rows); the micro-kernel broadcasts
// a[r * kAStride + p] (SSE2: loads the 4 copies at (r * kAStride + p) * 4).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace attn::kernels {

/// Register tile and cache blocking of the GEMM for one architecture (see
/// docs/kernels-gemm.md for the measurements behind each number).
template <class Arch>
struct GemmBlocking {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t kW = Batch::size;
  // Two vectors per row of the micro-tile: kNv loads of B feed kMr * kNv FMAs, and n_step
  // stays small (32 on AVX-512 divides head_dim 64 and d_model 768).
  static constexpr std::size_t kNv = 2;
  static constexpr std::size_t kNr = kNv * kW;
  // Accumulators: kMr * kNv vector registers. AVX-512 has 32: 12 x 2 = 24 accumulators + 2 B
  // vectors + 1 broadcast (14 x 2 measured no better, and 12 keeps kMc round). AVX2 and SSE2
  // have 16: 6 x 2 = 12 + 2 B + 1 broadcast (+ 1 product temporary on SSE2, no FMA there).
  static constexpr std::size_t kMr = kW == 16 ? 12 : 6;
  // Largest k per pass. One pass for gpt2-small's k = 768 writes C once instead of reading and
  // writing it again each pass: 2-3 % faster on AVX-512 than kKc = 256, the textbook choice
  // that keeps the B micro-panel in L1 (docs/kernels-gemm.md). The B micro-panel (768 x 32 x
  // 4 B = 96 KiB on AVX-512, 48 KiB on AVX2) then streams from L2 for each micro-tile: 128 B
  // per 12 cycles of FMAs on AVX-512, 64 B per 6 cycles on AVX2 (12 on Zen 1, whose FMA pipes
  // are 128-bit), a small fraction of L2 bandwidth on either machine. SSE2 stores A 4x
  // expanded (below), so it keeps the A block smaller with kKc = 256 (measured the same).
  static constexpr std::size_t kKc = kW == 4 ? 256 : 768;
  // Rows of A packed per block (a multiple of kMr): the block (kMc x kAStride floats, 294 KiB
  // for 96 x 784) stays in L2 while every B micro-panel of the call passes by, and fits a
  // 512 KiB Zen 1 L2 next to the streaming B micro-panel; 96 .. 240 measured the same here.
  // SSE2: 48 x 272 x 4 x 4 B = 204 KiB, for the 256 KiB L2 of the older CPUs that run it.
  static constexpr std::size_t kMc = kW == 4 ? 48 : 96;
  // Row stride of a packed A micro-panel: fixed, so the micro-kernel reaches all kMr rows from
  // one pointer with constant offsets; one line over kKc so rows spread over L1 sets.
  static constexpr std::size_t kAStride = kKc + 16;
  // SSE2 has no broadcast-from-memory: storing each A element 4 times turns the broadcast
  // (movss + shufps, competing with the multiplies and adds for the FP pipes) into a plain
  // load: 47 -> 53 GFLOP/s on 8192 x 768 x 768 here.
  static constexpr std::size_t kAExpand = kW == 4 ? kW : 1;
  // The C block of one engine task: 96 rows (one A block) x 768 columns. Each task packs its
  // rows of A once and uses them for kTaskN columns, so packing costs about 1 / (2 kTaskN) of
  // the FLOPs' time; this gives 86 tasks for gpt2-small's 8192 x 768 (258 for 8192 x 2304),
  // over 4 per thread up to 21 threads. Tasks from 96 x 384 to 384 x 384 measured the same.
  static constexpr std::size_t kTaskM = 96;
  static constexpr std::size_t kTaskN = 768;
};

template <class Arch, class Blk = GemmBlocking<Arch>>
struct GemmPacking {
  using Batch = typename Blk::Batch;
  static constexpr std::size_t kW = Blk::kW, kNr = Blk::kNr, kMr = Blk::kMr;
  static constexpr std::size_t kAStride = Blk::kAStride;
  static constexpr std::size_t kAExpand = Blk::kAExpand;
  static constexpr std::size_t kPanelFloats = kMr * kAStride * kAExpand;  // one A micro-panel
  static constexpr std::size_t kAhead = 8;  // rows of A prefetched ahead while packing
  static constexpr std::size_t kSlab = 16;  // k steps per slab of the transposing B pack

  static std::size_t packed_floats(std::size_t n, std::size_t k) noexcept {
    return (n + kNr - 1) / kNr * kNr * k;
  }

  // B(j, p) = b[j * rs_n + p * rs_k] into kNr-wide panels (see the top of this file).
  static void pack_b(const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                     std::size_t k, float* packed) noexcept {
    for (std::size_t j0 = 0; j0 < n; j0 += kNr) {
      const std::size_t cols = std::min(kNr, n - j0);
      float* dst = packed + j0 * k;
      const float* src = b + static_cast<std::ptrdiff_t>(j0) * rs_n;
      if (rs_n == 1 && cols == kNr) {
        // [k, n] layout: each k step is kNr contiguous floats, a plain vector copy.
        for (std::size_t p = 0; p < k; ++p) {
          const float* s = src + static_cast<std::ptrdiff_t>(p) * rs_k;
          for (std::size_t v = 0; v < kNr; v += kW) {
            Batch::load_unaligned(s + v).store_aligned(dst + p * kNr + v);
          }
        }
        continue;
      }
      // General (transposing) path, in slabs of kSlab k steps: the slab's reads (one line of
      // each of the kNr columns when rs_k = 1) and writes (kSlab x kNr floats) stay in L1.
      for (std::size_t p0 = 0; p0 < k; p0 += kSlab) {
        const std::size_t p1 = std::min(k, p0 + kSlab);
        for (std::size_t c = 0; c < cols; ++c) {
          const float* s = src + static_cast<std::ptrdiff_t>(c) * rs_n;
          for (std::size_t p = p0; p < p1; ++p) {
            dst[p * kNr + c] = s[static_cast<std::ptrdiff_t>(p) * rs_k];
          }
        }
      }
      for (std::size_t p = 0; p < k; ++p) {
        for (std::size_t c = cols; c < kNr; ++c) dst[p * kNr + c] = 0.0f;
      }
    }
  }

  // 16-bit B elements into the same panel layout (elements moved, not converted). Runs once per
  // weight at engine creation, so the plain slab transpose of the general path is enough.
  static void pack_b16(const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                       std::size_t n, std::size_t k, std::uint16_t* packed) noexcept {
    for (std::size_t j0 = 0; j0 < n; j0 += kNr) {
      const std::size_t cols = std::min(kNr, n - j0);
      std::uint16_t* dst = packed + j0 * k;
      const std::uint16_t* src = b + static_cast<std::ptrdiff_t>(j0) * rs_n;
      for (std::size_t p0 = 0; p0 < k; p0 += kSlab) {
        const std::size_t p1 = std::min(k, p0 + kSlab);
        for (std::size_t c = 0; c < cols; ++c) {
          const std::uint16_t* s = src + static_cast<std::ptrdiff_t>(c) * rs_n;
          for (std::size_t p = p0; p < p1; ++p) {
            dst[p * kNr + c] = s[static_cast<std::ptrdiff_t>(p) * rs_k];
          }
        }
      }
      for (std::size_t p = 0; p < k; ++p) {
        for (std::size_t c = cols; c < kNr; ++c) dst[p * kNr + c] = 0;  // +0 in bf16 and f16
      }
    }
  }

  // x rounded to bfloat16 (nearest even; NaN kept, quietened), kept in f32: the bit
  // arithmetic of half.hpp's f32_to_bf16 on every lane.
  static Batch round_bf16(Batch x) noexcept {
    using U = xsimd::batch<std::uint32_t, Arch>;
    const U u = xsimd::bitwise_cast<U>(x);
    // + 0x7FFF, or 0x8000 when the kept part is odd (ties to even). No shift: GCC 12's
    // AVX-512 shift intrinsics start from _mm512_undefined and warn (-Wmaybe-uninitialized).
    const U bias = xsimd::select((u & U(0x10000u)) != U(0u), U(0x8000u), U(0x7FFFu));
    const U rounded = (u + bias) & U(0xFFFF0000u);
    const U nan = (u | U(0x00400000u)) & U(0xFFFF0000u);
    return xsimd::select(x != x, xsimd::bitwise_cast<Batch>(nan),
                         xsimd::bitwise_cast<Batch>(rounded));
  }

  // Rows 0 .. mc - 1, columns 0 .. kc - 1 of a (row stride lda) into micro-panels of kMr rows,
  // row r of a micro-panel at r * kAStride: a plain vector copy of each row (round: each element
  // rounded to bfloat16 on the way, GemmArgs::round_a_bf16).
  static void pack_a(const float* a, std::ptrdiff_t lda, std::size_t mc, std::size_t kc, float* dst,
                     bool round = false) noexcept {
    if (round) {
      pack_a_rounded(a, lda, mc, kc, dst);
      return;
    }
    for (std::size_t i = 0; i < mc; ++i) {
      float* d = dst + (i / kMr) * kPanelFloats + (i % kMr) * kAStride * kAExpand;
      // A comes from DRAM once per GEMM: fetch rows kAhead ahead so several rows' misses
      // overlap with the copying (about 1 % on 8192 x 768 x 768; prefetching the next A block
      // during the micro-kernels, or the next B micro-panel, measured slower).
      if (i + kAhead < mc) {
        const float* ahead = a + static_cast<std::ptrdiff_t>(i + kAhead) * lda;
        for (std::size_t p = 0; p < kc; p += 16) __builtin_prefetch(ahead + p);
        __builtin_prefetch(ahead + kc - 1);
      }
      const float* s = a + static_cast<std::ptrdiff_t>(i) * lda;
      if constexpr (kAExpand == kW) {
        for (std::size_t p = 0; p < kc; ++p) Batch(s[p]).store_aligned(d + p * kW);
      } else {
        std::size_t p = 0;
        for (; p + kW <= kc; p += kW) Batch::load_unaligned(s + p).store_aligned(d + p);
        for (; p < kc; ++p) d[p] = s[p];
      }
    }
  }

  static void pack_a_rounded(const float* a, std::ptrdiff_t lda, std::size_t mc, std::size_t kc,
                             float* dst) noexcept {
    for (std::size_t i = 0; i < mc; ++i) {
      float* d = dst + (i / kMr) * kPanelFloats + (i % kMr) * kAStride * kAExpand;
      const float* s = a + static_cast<std::ptrdiff_t>(i) * lda;
      if constexpr (kAExpand == kW) {
        for (std::size_t p = 0; p < kc; ++p) round_bf16(Batch(s[p])).store_aligned(d + p * kW);
      } else {
        std::size_t p = 0;
        for (; p + kW <= kc; p += kW) round_bf16(Batch::load_unaligned(s + p)).store_aligned(d + p);
        if (p < kc) {
          alignas(64) float tail[kW] = {};
          for (std::size_t t = 0; t < kc - p; ++t) tail[t] = s[p + t];
          round_bf16(Batch::load_aligned(tail)).store_aligned(tail);
          for (std::size_t t = 0; t < kc - p; ++t) d[p + t] = tail[t];
        }
      }
    }
  }
};

}  // namespace attn::kernels
