// Roofline probes: peak FMA throughput and streaming read bandwidth, per architecture.
//
// Algorithm: PeakFma keeps kChains independent accumulators in registers and issues one FMA
// per chain per round; with two FMA pipes and a 4-5 cycle latency, 10-12 chains keep both
// pipes busy (24 with 32 registers). ReadSum streams the buffer with four vector
// accumulators so the loads, not the add latency, are the limit.
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace attn::kernels {

struct PeakFma {
  template <class Arch>
  [[gnu::noinline]] double operator()(Arch, std::size_t iterations) const noexcept {
    using B = xsimd::batch<float, Arch>;
    // 16 vector registers on SSE/AVX: 12 chains + 2 constants; 32 on AVX-512: 24 chains.
    constexpr std::size_t kChains = B::size == 16 ? 24 : 12;
    B acc[kChains];
    for (std::size_t c = 0; c < kChains; ++c) acc[c] = B(0.001f * static_cast<float>(c));
    const B a(0.999999f), b(1e-7f);
    for (std::size_t i = 0; i < iterations; ++i) {
      // Without the full unroll GCC 12 keeps the 24 AVX-512 chains in memory and measures
      // store-forwarding instead of the FMA pipes (half the true peak on Zen 4/5).
#pragma GCC unroll 32
      for (std::size_t c = 0; c < kChains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
    }
    B sum = acc[0];
    for (std::size_t c = 1; c < kChains; ++c) sum += acc[c];
    // The result feeds the return value so the loop cannot be removed.
    return static_cast<double>(iterations) * kChains * B::size * 2.0 +
           (xsimd::hadd(sum) < -1.0f ? 1.0 : 0.0);
  }
};

struct ReadSum {
  template <class Arch>
  [[gnu::noinline]] float operator()(Arch, const float* data, std::size_t n) const noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      s0 += B::load_unaligned(data + i);
      s1 += B::load_unaligned(data + i + W);
      s2 += B::load_unaligned(data + i + 2 * W);
      s3 += B::load_unaligned(data + i + 3 * W);
    }
    float s = xsimd::hadd((s0 + s1) + (s2 + s3));
    for (; i < n; ++i) s += data[i];
    return s;
  }
};

}  // namespace attn::kernels
