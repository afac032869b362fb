// GEMM blocking constants per architecture and the packing of B (once) and A (per block).
//
// Packed B: panels of kNr columns, panel q holding columns q*kNr .. q*kNr + kNr - 1 as
// [k][kNr] (column index fastest), zero-padded past n. Panel q starts at q * kNr * k, so the
// micro-panel (rows pc .. pc + kc - 1 of k) the micro-kernel reads is contiguous and
// vector-aligned when `packed` is 64-byte aligned (kNr * 4 bytes is a multiple of 32).
// Packed A: an [mc, kc] block as micro-panels of kMr rows, each [kc][kMr] (row fastest),
// rows past mc set to 0, so the micro-kernel broadcasts kMr consecutive floats per k step.
#pragma once

#include <algorithm>
#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace attn::kernels {

/// Register tile and cache blocking of the GEMM for one architecture (see
/// docs/kernels-gemm.md for the measurements behind each number).
template <class Arch>
struct GemmBlocking {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t kW = Batch::size;
  // Two vectors per row of the micro-tile: loads per FMA stay low (kNv loads for kMr * kNv
  // FMAs) and n_step stays small (32 on AVX-512 divides head_dim 64 and d_model 768).
  static constexpr std::size_t kNv = 2;
  static constexpr std::size_t kNr = kNv * kW;
  // Accumulators: kMr * kNv vector registers. AVX-512 has 32: 12 x 2 = 24 accumulators + 2
  // B vectors (A is broadcast from memory inside the FMA). AVX2/SSE2 have 16: 6 x 2 = 12 +
  // 2 B vectors + a broadcast (+ a product temporary on SSE2, which has no FMA).
  static constexpr std::size_t kMr = kW == 16 ? 12 : 6;
  // Largest k per pass: the B micro-panel (kKc x kNr floats) is reused by every micro-tile of
  // an A block, so it should stay in L1 next to the A micro-panels streaming through:
  // AVX2 256 x 16 x 4 B = 16 KiB, half of a 32 KiB L1d (Zen 1), AVX-512 256 x 32 x 4 B = 32 KiB
  // (L1d 48 KiB here; measured no worse than 128 or 192, and fewer C round trips).
  static constexpr std::size_t kKc = 256;
  // Rows of A packed per block: kMc x kKc floats live in L2 while every B micro-panel of the
  // call passes by. 240 x 256 x 4 B = 240 KiB: under half of a 512 KiB L2 (Zen 1) and a
  // quarter of the 1 MiB here, leaving room for the C tile rows and B. A multiple of kMr.
  static constexpr std::size_t kMc = 240;
  // Columns per engine task: each task packs its rows of A once per pass and reuses them for
  // kTaskN columns, so packing costs about 1 / (2 * kTaskN) of the FLOPs' time; 768 keeps it
  // near 1% and still gives 35 tasks for gpt2-small's 8192 x 768 (105 for 8192 x 2304).
  static constexpr std::size_t kTaskN = 768;
};

template <class Arch, class Blk = GemmBlocking<Arch>>
struct GemmPacking {
  using Batch = typename Blk::Batch;
  static constexpr std::size_t kW = Blk::kW, kNr = Blk::kNr, kMr = Blk::kMr;

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
      // General (transposing) path: read each column along k, write it strided by kNr. A panel
      // is kNr * k floats, small enough to stay in cache while its columns are filled in.
      for (std::size_t c = 0; c < cols; ++c) {
        const float* s = src + static_cast<std::ptrdiff_t>(c) * rs_n;
        for (std::size_t p = 0; p < k; ++p)
          dst[p * kNr + c] = s[static_cast<std::ptrdiff_t>(p) * rs_k];
      }
      for (std::size_t p = 0; p < k; ++p) {
        for (std::size_t c = cols; c < kNr; ++c) dst[p * kNr + c] = 0.0f;
      }
    }
  }

  // Rows 0 .. mc - 1, columns 0 .. kc - 1 of a (row stride lda) into kMr-row micro-panels.
  static void pack_a(const float* a, std::ptrdiff_t lda, std::size_t mc, std::size_t kc,
                     float* dst) noexcept {
    for (std::size_t i0 = 0; i0 < mc; i0 += kMr, dst += kMr * kc) {
      const std::size_t rows = std::min(kMr, mc - i0);
      for (std::size_t r = 0; r < rows; ++r) {
        const float* s = a + static_cast<std::ptrdiff_t>(i0 + r) * lda;
        for (std::size_t p = 0; p < kc; ++p) dst[p * kMr + r] = s[p];
      }
      for (std::size_t r = rows; r < kMr; ++r) {
        for (std::size_t p = 0; p < kc; ++p) dst[p * kMr + r] = 0.0f;
      }
    }
  }
};

}  // namespace attn::kernels
