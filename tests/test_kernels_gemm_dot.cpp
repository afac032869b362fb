// compute_dtype bf16's GEMMs against their float64 twin (reference::gemm_bf16_dot: A rounded to
// bf16, bf16 B): the dot-product driver on the scalar emulation of vdpbf16ps (every machine) and
// on vdpbf16ps itself (where the CPU has AVX512-BF16), and the f32 kernel with A rounded as it
// is packed (every ISA). Tail sizes, odd k, several k passes, tile splits, guards around C.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace k = attn::kernels;
using test::Aligned;

namespace {

constexpr float kGuard = -12345.678f;

struct Problem {
  std::size_t m = 0, n = 0, k = 0;
  std::vector<float> a;
  std::ptrdiff_t rs_n = 0, rs_k = 0;
  std::vector<std::uint16_t> b;  // bf16 bits
  std::vector<float> bias;

  static Problem make(std::size_t m, std::size_t n, std::size_t kk, bool kn, bool with_bias,
                      std::uint64_t seed) {
    Problem p;
    p.m = m, p.n = n, p.k = kk;
    p.a = test::random_floats(m * kk, seed);
    for (float x : test::random_floats(n * kk, seed + 1)) p.b.push_back(k::f32_to_bf16(x).bits);
    p.rs_n = kn ? 1 : static_cast<std::ptrdiff_t>(kk);
    p.rs_k = kn ? static_cast<std::ptrdiff_t>(n) : 1;
    if (with_bias) p.bias = test::random_floats(n, seed + 2);
    return p;
  }
  const float* bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }
};

enum class Path { kEmulated, kVdpbf16ps, kRoundedA };

std::string path_name(Path path) {
  return path == Path::kEmulated ? "emulated vdpbf16ps"
                                 : (path == Path::kVdpbf16ps ? "vdpbf16ps" : "f32 FMA, A rounded");
}

// C [m, ldc = n + 3] (guards after each row) computed in tiles of tile_m x tile_n.
std::vector<float> run(Path path, k::Isa isa, const Problem& p, std::size_t tile_m,
                       std::size_t tile_n) {
  const bool dot = path != Path::kRoundedA;
  const std::size_t elems =
      dot ? k::gemm_dot_packed_elems(p.n, p.k) : k::gemm_packed_floats(isa, p.n, p.k);
  Aligned<std::uint16_t> packed(elems);
  Aligned<float> scratch(dot ? k::gemm_dot_scratch_floats() : k::gemm_scratch_floats(isa));
  if (dot) {
    k::gemm_dot_pack_b(p.b.data(), p.rs_n, p.rs_k, p.n, p.k, packed.get());
  } else {
    k::gemm_pack_b16(isa, p.b.data(), p.rs_n, p.rs_k, p.n, p.k, packed.get());
  }
  const std::size_t ldc = p.n + 3;
  std::vector<float> c(p.m * ldc, kGuard);
  for (std::size_t i0 = 0; i0 < p.m; i0 += tile_m) {
    for (std::size_t j0 = 0; j0 < p.n; j0 += tile_n) {
      k::GemmArgs g;
      g.a = p.a.data() + i0 * p.k;
      g.lda = static_cast<std::ptrdiff_t>(p.k);
      g.b_type = k::WeightType::kBf16;
      g.packed_b16 = packed.get();
      g.n_total = p.n;
      g.m = std::min(tile_m, p.m - i0);
      g.k = p.k;
      g.n0 = j0;
      g.n = std::min(tile_n, p.n - j0);
      g.bias = p.bias_ptr();
      g.c = c.data() + i0 * ldc;
      g.ldc = static_cast<std::ptrdiff_t>(ldc);
      g.scratch = scratch.get();
      if (path == Path::kEmulated) {
        k::gemm_bf16_dot_emulated(g);
      } else if (path == Path::kVdpbf16ps) {
        k::gemm_bf16_dot(g);
      } else {
        g.round_a_bf16 = true;
        k::gemm(isa, g);
      }
    }
  }
  return c;
}

// Worst |got - want| / ((k + 2) u sum |a_bf16 b|): the f32 rounding bound of the other GEMM
// tests (the bf16 products are exact in f32, so only the sums round). INFINITY when a guard
// past column n was written.
double worst_error(const Problem& p, const std::vector<float>& c) {
  std::vector<double> want(p.m * p.n), bound(p.m * p.n);
  k::reference::gemm_bf16_dot(p.a.data(), static_cast<std::ptrdiff_t>(p.k), p.m, p.k, p.b.data(),
                              p.rs_n, p.rs_k, p.n, p.bias_ptr(), want.data(),
                              static_cast<std::ptrdiff_t>(p.n));
  std::vector<float> abs_a(p.a), abs_bias(p.bias);
  std::vector<std::uint16_t> abs_b(p.b);
  for (float& x : abs_a) x = std::abs(x);
  for (std::uint16_t& h : abs_b) h &= 0x7FFF;
  for (float& x : abs_bias) x = std::abs(x);
  k::reference::gemm_bf16_dot(
      abs_a.data(), static_cast<std::ptrdiff_t>(p.k), p.m, p.k, abs_b.data(), p.rs_n, p.rs_k, p.n,
      p.bias.empty() ? nullptr : abs_bias.data(), bound.data(), static_cast<std::ptrdiff_t>(p.n));
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

// Every path this machine runs, with the ISA it runs on (the dot paths ignore it).
std::vector<std::pair<Path, k::Isa>> paths() {
  std::vector<std::pair<Path, k::Isa>> out{{Path::kEmulated, k::Isa::kSse2}};
  if (k::bf16_dot_supported()) out.emplace_back(Path::kVdpbf16ps, k::Isa::kAvx512);
  for (const k::Isa isa : test::supported_isas()) out.emplace_back(Path::kRoundedA, isa);
  return out;
}

const std::size_t kSizes[] = {1, 2, 3, 7, 12, 13, 15, 16, 17, 31, 32, 33, 63, 65, 97};
constexpr std::size_t kNumSizes = sizeof(kSizes) / sizeof(kSizes[0]);

}  // namespace

TEST_CASE("bf16 dot-product GEMMs match the float64 twin on tail sizes",
          "[kernels][gemm][bf16dot]") {
  for (std::size_t im = 0; im < kNumSizes; im += 2) {
    for (std::size_t in = 0; in < kNumSizes; ++in) {
      const std::size_t m = kSizes[im], n = kSizes[in];
      const std::size_t kk = kSizes[(im * 7 + in * 3) % kNumSizes];
      const bool kn = (im + in) % 2 == 1, with_bias = (im + 2 * in) % 3 != 0;
      const Problem p = Problem::make(m, n, kk, kn, with_bias, im * 100 + in);
      for (const auto& [path, isa] : paths()) {
        INFO(path_name(path) << " isa " << k::isa_name(isa) << " m " << m << " n " << n << " k "
                             << kk << " kn " << kn << " bias " << with_bias);
        REQUIRE(worst_error(p, run(path, isa, p, m, n)) <= 1.0);
      }
    }
  }
}

TEST_CASE("bf16 dot-product GEMMs: odd k, several k passes and tile splits give the same bits",
          "[kernels][gemm][bf16dot]") {
  // k = 769: two passes (386 + 383, the last odd); 1537: three; 2049: three, each even but the
  // last. m = 110 crosses the 96-row A block.
  for (const std::size_t kk : {769, 1537, 2049}) {
    const Problem p = Problem::make(110, 97, kk, kk == 1537, true, kk);
    for (const auto& [path, isa] : paths()) {
      INFO(path_name(path) << " isa " << k::isa_name(isa) << " k " << kk);
      const std::vector<float> full = run(path, isa, p, p.m, p.n);
      REQUIRE(worst_error(p, full) <= 1.0);
      const std::size_t step = path == Path::kRoundedA ? k::gemm_n_step(isa) : k::gemm_dot_n_step();
      const std::vector<float> tiled = run(path, isa, p, 7, 2 * step);
      REQUIRE(std::memcmp(tiled.data(), full.data(), full.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("the rounded-A GEMM is the f32 GEMM on A rounded to bf16, bit for bit",
          "[kernels][gemm][bf16dot]") {
  Problem p = Problem::make(37, 70, 200, false, true, 11);
  p.a[200 + 3] = NAN;  // rows 1 and 2: NaN and Inf (row 0 keeps the tie below visible)
  p.a[400 + 5] = INFINITY;
  p.a[7] = 1.0f + 0x3p-8f;  // a tie with an odd kept part: rounds up to 1 + 2^-6
  std::vector<float> a_rounded(p.a);
  for (float& x : a_rounded) x = k::bf16_to_f32(k::f32_to_bf16(x).bits);
  for (const k::Isa isa : test::supported_isas()) {
    INFO("isa " << k::isa_name(isa));
    const std::vector<float> c = run(Path::kRoundedA, isa, p, p.m, p.n);
    Problem q = p;
    q.a = a_rounded;
    // The plain bf16-weight GEMM (round_a_bf16 false) on the pre-rounded A.
    const std::size_t elems = k::gemm_packed_floats(isa, q.n, q.k);
    Aligned<std::uint16_t> packed(elems);
    Aligned<float> scratch(k::gemm_scratch_floats(isa));
    k::gemm_pack_b16(isa, q.b.data(), q.rs_n, q.rs_k, q.n, q.k, packed.get());
    const std::size_t ldc = q.n + 3;
    std::vector<float> want(q.m * ldc, kGuard);
    k::GemmArgs g;
    g.a = q.a.data();
    g.lda = static_cast<std::ptrdiff_t>(q.k);
    g.b_type = k::WeightType::kBf16;
    g.packed_b16 = packed.get();
    g.n_total = q.n, g.m = q.m, g.k = q.k, g.n0 = 0, g.n = q.n;
    g.bias = q.bias_ptr();
    g.c = want.data();
    g.ldc = static_cast<std::ptrdiff_t>(ldc);
    g.scratch = scratch.get();
    k::gemm(isa, g);
    REQUIRE(std::memcmp(c.data(), want.data(), c.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("the vdpbf16ps emulation: pair order, one rounding per product, DAZ and FTZ",
          "[kernels][gemm][bf16dot]") {
  // One output, k = 4, no bias: c = (((0 + a1 b1) + a0 b0) + a3 b3) + a2 b2, each step rounded
  // to f32 (vdpbf16ps takes the odd element of a pair first).
  auto one = [](std::vector<float> a, std::vector<float> b) {
    Problem p;
    p.m = 1, p.n = 1, p.k = a.size();
    p.a = a;
    for (float x : b) p.b.push_back(k::f32_to_bf16(x).bits);
    p.rs_n = static_cast<std::ptrdiff_t>(p.k), p.rs_k = 1;
    return run(Path::kEmulated, k::Isa::kSse2, p, 1, 1)[0];
  };
  // 1 + 2^-24 rounds to 1 (a tie, to even) twice: 1. Summed the other way round (the two small
  // products first) it would be 1 + 2^-23.
  CHECK(one({0x1p-24f, 1.0f, 0.0f, 0x1p-24f}, {1.0f, 1.0f, 0.0f, 1.0f}) == 1.0f);
  CHECK(one({0x1p-24f, 0x1p-24f, 0.0f, 1.0f}, {1.0f, 1.0f, 0.0f, 1.0f}) == 1.0f + 0x1p-23f);
  // Within a pair the odd product comes first: (1 + -1) + 2^-24, not (1 + 2^-24) + -1 = 0.
  CHECK(one({0.0f, 1.0f, 0x1p-24f, -1.0f}, {1.0f, 1.0f, 1.0f, 1.0f}) == 0x1p-24f);
  // A bf16 subnormal input reads as zero; a subnormal sum is flushed to zero.
  CHECK(one({0x1p-130f, 0.0f}, {0x1p100f, 0.0f}) == 0.0f);
  CHECK(one({0x1p-70f, 0.0f}, {0x1p-70f, 0.0f}) == 0.0f);
  CHECK(one({0x1p-60f, 0.0f}, {0x1p-60f, 0.0f}) == 0x1p-120f);
  // NaN and Inf propagate as in f32.
  CHECK(std::isnan(one({NAN, 1.0f}, {1.0f, 1.0f})));
  CHECK(one({INFINITY, 1.0f}, {1.0f, 1.0f}) == INFINITY);
}
