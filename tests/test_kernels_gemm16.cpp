// The GEMM on 16-bit packed weights (bfloat16, binary16) against its float64 twin on every
// supported instruction set: tail sizes, both B layouts, bias, tile splits; the bits against the
// f32 kernel on the widened weights; every one of the 65536 bit patterns widened; the scalar
// rounding (nearest even, overflow, NaN/Inf) the engine packs with.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace k = attn::kernels;
using test::Aligned;

namespace {

constexpr float kGuard = -12345.678f;

// A [m, k], B [n, k] (or [k, n] when kn) as 16-bit elements of `type`, and the same B widened.
struct Problem16 {
  std::size_t m = 0, n = 0, k = 0;
  std::vector<float> a;
  std::ptrdiff_t rs_n = 0, rs_k = 0;
  std::vector<std::uint16_t> b;
  std::vector<float> b_wide;
  std::vector<float> bias;
  k::WeightType type = k::WeightType::kBf16;

  static Problem16 make(k::WeightType type, std::size_t m, std::size_t n, std::size_t kk, bool kn,
                        bool with_bias, std::uint64_t seed) {
    Problem16 p;
    p.type = type;
    p.m = m, p.n = n, p.k = kk;
    p.a = test::random_floats(m * kk, seed);
    const auto bv = test::random_floats(n * kk, seed + 1);
    for (float x : bv) {
      p.b.push_back(k::narrow16(x, type).bits);
      p.b_wide.push_back(k::widen16(p.b.back(), type));
    }
    p.rs_n = kn ? 1 : static_cast<std::ptrdiff_t>(kk);
    p.rs_k = kn ? static_cast<std::ptrdiff_t>(n) : 1;
    if (with_bias) p.bias = test::random_floats(n, seed + 2);
    return p;
  }
  const float* bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }
};

// C [m, ldc = n + 3] (guards around) computed in tiles of tile_m x tile_n, with B packed either
// as 16-bit elements (wide = false) or as the widened floats through the f32 kernel.
std::vector<float> run16(k::Isa isa, const Problem16& p, bool wide, std::size_t tile_m,
                         std::size_t tile_n) {
  const std::size_t elems = k::gemm_packed_floats(isa, p.n, p.k);
  Aligned<float> packed32(wide ? elems : 1);
  Aligned<std::uint16_t> packed16(wide ? 1 : elems);
  Aligned<float> scratch(k::gemm_scratch_floats(isa));
  if (wide) {
    k::gemm_pack_b(isa, p.b_wide.data(), p.rs_n, p.rs_k, p.n, p.k, packed32.get());
  } else {
    k::gemm_pack_b16(isa, p.b.data(), p.rs_n, p.rs_k, p.n, p.k, packed16.get());
  }
  const std::size_t ldc = p.n + 3;
  std::vector<float> c(p.m * ldc, kGuard);
  for (std::size_t i0 = 0; i0 < p.m; i0 += tile_m) {
    for (std::size_t j0 = 0; j0 < p.n; j0 += tile_n) {
      k::GemmArgs g;
      g.a = p.a.data() + i0 * p.k;
      g.lda = static_cast<std::ptrdiff_t>(p.k);
      g.b_type = wide ? k::WeightType::kF32 : p.type;
      g.packed_b = packed32.get();
      g.packed_b16 = packed16.get();
      g.n_total = p.n;
      g.m = std::min(tile_m, p.m - i0);
      g.k = p.k;
      g.n0 = j0;
      g.n = std::min(tile_n, p.n - j0);
      g.bias = p.bias_ptr();
      g.c = c.data() + i0 * ldc;
      g.ldc = static_cast<std::ptrdiff_t>(ldc);
      g.scratch = scratch.get();
      k::gemm(isa, g);
    }
  }
  return c;
}

// Worst |got - want| / ((k + 2) u bound): the f32 rounding bound of test_kernels_gemm.cpp
// (the widening is exact, so the 16-bit kernel is held to the same bound).
double worst_error(const Problem16& p, const std::vector<float>& c) {
  std::vector<double> want(p.m * p.n), bound(p.m * p.n);
  k::reference::gemm_w16(p.a.data(), static_cast<std::ptrdiff_t>(p.k), p.m, p.k, p.b.data(), p.type,
                         p.rs_n, p.rs_k, p.n, p.bias_ptr(), want.data(),
                         static_cast<std::ptrdiff_t>(p.n));
  std::vector<float> abs_a(p.a), abs_b(p.b_wide), abs_bias(p.bias);
  for (float& x : abs_a) x = std::abs(x);
  for (float& x : abs_b) x = std::abs(x);
  for (float& x : abs_bias) x = std::abs(x);
  k::reference::gemm(abs_a.data(), static_cast<std::ptrdiff_t>(p.k), p.m, p.k, abs_b.data(), p.rs_n,
                     p.rs_k, p.n, p.bias.empty() ? nullptr : abs_bias.data(), bound.data(),
                     static_cast<std::ptrdiff_t>(p.n));
  const double u = std::ldexp(1.0, -24);
  const std::size_t ldc = p.n + 3;
  double worst = 0;
  for (std::size_t i = 0; i < p.m; ++i) {
    for (std::size_t j = 0; j < ldc; ++j) {
      const float got = c[i * ldc + j];
      if (j >= p.n) {
        if (std::memcmp(&got, &kGuard, sizeof got) != 0) return INFINITY;
        continue;
      }
      const double tol = static_cast<double>(p.k + 2) * u * bound[i * p.n + j] + 1e-30;
      const double err = std::isnan(got) ? INFINITY : std::abs(got - want[i * p.n + j]) / tol;
      worst = std::max(worst, err);
    }
  }
  return worst;
}

const std::size_t kSizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129};
constexpr std::size_t kNumSizes = sizeof(kSizes) / sizeof(kSizes[0]);

}  // namespace

TEST_CASE("gemm on 16-bit weights matches the float64 reference on tail sizes",
          "[kernels][gemm][dtype]") {
  for (const k::WeightType type : {k::WeightType::kBf16, k::WeightType::kF16}) {
    for (std::size_t im = 0; im < kNumSizes; im += 2) {
      for (std::size_t in = 0; in < kNumSizes; ++in) {
        const std::size_t m = kSizes[im], n = kSizes[in];
        const std::size_t kk = kSizes[(im * 7 + in * 3) % kNumSizes];
        const bool kn = (im + in) % 2 == 1, with_bias = (im + 2 * in) % 3 != 0;
        const Problem16 p = Problem16::make(type, m, n, kk, kn, with_bias, im * 100 + in);
        for (const k::Isa isa : test::supported_isas()) {
          INFO("isa " << k::isa_name(isa) << " type " << int(type) << " m " << m << " n " << n
                      << " k " << kk << " kn " << kn << " bias " << with_bias);
          const std::vector<float> c = run16(isa, p, false, m, n);
          REQUIRE(worst_error(p, c) <= 1.0);
          // The same FMA chains as the f32 kernel on the widened weights: identical bits.
          const std::vector<float> c32 = run16(isa, p, true, m, n);
          REQUIRE(std::memcmp(c.data(), c32.data(), c.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST_CASE("gemm on 16-bit weights: large shapes and tile splits give identical bits",
          "[kernels][gemm][dtype]") {
  for (const k::WeightType type : {k::WeightType::kBf16, k::WeightType::kF16}) {
    const Problem16 p = Problem16::make(type, 110, 97, 1700, false, true, 7);
    for (const k::Isa isa : test::supported_isas()) {
      INFO("isa " << k::isa_name(isa) << " type " << int(type));
      const std::vector<float> full = run16(isa, p, false, p.m, p.n);
      REQUIRE(worst_error(p, full) <= 1.0);
      const std::size_t step = k::gemm_n_step(isa);
      const std::vector<float> tiled = run16(isa, p, false, 7, 2 * step);
      REQUIRE(std::memcmp(tiled.data(), full.data(), full.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("gemm widens every 16-bit pattern exactly (subnormals, Inf, NaN)",
          "[kernels][gemm][dtype]") {
  // C[0, j] = 1 * B[j, 0] with k = 1 and no bias: the widened weight itself (FMA into +0
  // turns -0 into +0 and keeps NaN a NaN).
  for (const k::WeightType type : {k::WeightType::kBf16, k::WeightType::kF16}) {
    Problem16 p;
    p.type = type;
    p.m = 1, p.n = 65536, p.k = 1;
    p.a = {1.0f};
    p.rs_n = 1, p.rs_k = 65536;
    for (std::uint32_t h = 0; h < 65536; ++h) p.b.push_back(static_cast<std::uint16_t>(h));
    for (const k::Isa isa : test::supported_isas()) {
      const std::vector<float> c = run16(isa, p, false, 1, p.n);
      std::size_t wrong = 0;
      for (std::uint32_t h = 0; h < 65536; ++h) {
        const float want = k::widen16(static_cast<std::uint16_t>(h), type) + 0.0f;
        const float got = c[h];
        const bool ok = std::isnan(want) ? std::isnan(got)
                                         : std::bit_cast<std::uint32_t>(got) ==
                                               std::bit_cast<std::uint32_t>(want);
        if (!ok && wrong++ < 3)
          WARN("isa " << k::isa_name(isa) << " bits " << h << " got " << got << " want " << want);
      }
      INFO("isa " << k::isa_name(isa) << " type " << int(type));
      REQUIRE(wrong == 0);
    }
  }
}

TEST_CASE("rounding to bf16 and f16: nearest even, overflow flagged, NaN and Inf kept",
          "[kernels][dtype]") {
  using k::f32_to_bf16;
  using k::f32_to_f16;
  // bf16: 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); just above rounds up.
  CHECK(f32_to_bf16(1.0f + 0x1p-8f).bits == 0x3F80);
  CHECK(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f).bits == 0x3F81);
  CHECK(f32_to_bf16(1.0f + 0x3p-8f).bits == 0x3F82);  // tie, odd below: up
  CHECK(f32_to_bf16(-2.5f).bits == 0xC020);
  // f16: 1 + 2^-11 is a tie (to 1), 65504 is the largest finite, 65519.99 rounds down to it,
  // 65520 rounds past it: flagged.
  CHECK(f32_to_f16(1.0f + 0x1p-11f).bits == 0x3C00);
  CHECK(f32_to_f16(1.0f + 0x3p-11f).bits == 0x3C02);
  CHECK(f32_to_f16(65504.0f).bits == 0x7BFF);
  CHECK_FALSE(f32_to_f16(65519.99f).overflow);
  CHECK(f32_to_f16(65519.99f).bits == 0x7BFF);
  CHECK(f32_to_f16(65520.0f).overflow);
  CHECK(f32_to_f16(-1e9f).overflow);
  CHECK(f32_to_f16(0x1p-24f).bits == 0x0001);        // smallest subnormal
  CHECK(f32_to_f16(0x1p-25f).bits == 0x0000);        // tie to even: 0
  CHECK(f32_to_f16(0x3p-25f).bits == 0x0002);        // tie, odd below: up
  CHECK(f32_to_bf16(3.4028235e38f).overflow);        // f32's max rounds past bf16's
  CHECK_FALSE(f32_to_bf16(3.3895314e38f).overflow);  // bf16's max
  // Inf stays Inf (not an overflow), NaN stays NaN.
  const float inf = INFINITY, nan = NAN;
  for (const k::WeightType t : {k::WeightType::kBf16, k::WeightType::kF16}) {
    CHECK_FALSE(k::narrow16(inf, t).overflow);
    CHECK(k::widen16(k::narrow16(inf, t).bits, t) == inf);
    CHECK(k::widen16(k::narrow16(-inf, t).bits, t) == -inf);
    CHECK(std::isnan(k::widen16(k::narrow16(nan, t).bits, t)));
    CHECK_FALSE(k::narrow16(nan, t).overflow);
  }
  // Every 16-bit value survives widen then narrow (the lossless load of BF16/F16 files).
  for (std::uint32_t h = 0; h < 65536; ++h) {
    for (const k::WeightType t : {k::WeightType::kBf16, k::WeightType::kF16}) {
      const auto bits = static_cast<std::uint16_t>(h);
      const float w = k::widen16(bits, t);
      if (std::isnan(w)) continue;
      REQUIRE(k::narrow16(w, t).bits == bits);
    }
  }
}
