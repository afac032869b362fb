// The bf16 dot-product roofline probe (vdpbf16ps), built with -mavx512bf16 when the compiler
// has it (kernels/CMakeLists.txt) and run only after a run-time check of the CPU: the roof a
// future compute_dtype bf16 GEMM (issue 15) would be measured against. No GEMM uses it yet.
#include <cstddef>

#include <immintrin.h>

namespace attn::kernels::detail {

// Algorithm: as PeakFma on AVX-512, 24 independent accumulators (of 32 zmm registers) each take
// one vdpbf16ps per round, enough to cover its latency on two pipes. Each instruction does 16
// lanes x 2 products + 2 additions = 64 FLOPs.
[[gnu::noinline]] double peak_bf16_avx512(std::size_t iterations) noexcept {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.001f * static_cast<float>(c));
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80);  // pairs of bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x33D633D6);  // pairs of bf16 ~1e-7
  for (std::size_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 32
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float x : lanes) total += x;
  return static_cast<double>(iterations) * kChains * 64.0 + (total < -1.0f ? 1.0 : 0.0);
}

}  // namespace attn::kernels::detail
