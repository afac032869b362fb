// The packed GEMM kernel against its float64 twin on every supported instruction set: tail
// sizes, both B layouts, bias, column offsets, tile splits (identical bits) and guard values
// around C (nothing outside the requested block is written).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace k = attn::kernels;

namespace {

struct FreeDeleter {
  void operator()(float* p) const noexcept { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

// 64-byte aligned (as the kernels require of packed B and scratch), the size rounded up to
// 64 bytes only because aligned_alloc needs it.
AlignedFloats aligned_floats(std::size_t n) {
  const std::size_t bytes = std::max<std::size_t>(64, (n * sizeof(float) + 63) / 64 * 64);
  return AlignedFloats(static_cast<float*>(std::aligned_alloc(64, bytes)));
}

constexpr float kGuard = -12345.678f;  // written around C; must survive every call
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();  // padding of A and B

// One GEMM problem: A [m, k] (row stride lda >= k, padding poisoned with NaN), B given by
// strides (padding poisoned), optional bias.
struct Problem {
  std::size_t m = 0, n = 0, k = 0;
  std::ptrdiff_t lda = 0;
  std::vector<float> a;
  std::ptrdiff_t rs_n = 0, rs_k = 0;
  std::vector<float> b;
  std::vector<float> bias;  // empty: no bias

  // kn: B stored [k, n] (x @ W layout) instead of nn.Linear's [n, k]; pad: extra floats per
  // row of A and B that the kernel must never read.
  static Problem make(std::size_t m, std::size_t n, std::size_t kk, bool kn, bool with_bias,
                      std::size_t pad, std::uint64_t seed) {
    Problem p;
    p.m = m, p.n = n, p.k = kk;
    p.lda = static_cast<std::ptrdiff_t>(kk + pad);
    p.a.assign(m * (kk + pad), kPoison);
    const auto av = test::random_floats(m * kk, seed);
    for (std::size_t i = 0; i < m; ++i) std::copy_n(&av[i * kk], kk, &p.a[i * (kk + pad)]);
    const std::size_t rows = kn ? kk : n, cols = kn ? n : kk;
    p.b.assign(rows * (cols + pad), kPoison);
    const auto bv = test::random_floats(rows * cols, seed + 1);
    for (std::size_t r = 0; r < rows; ++r) std::copy_n(&bv[r * cols], cols, &p.b[r * (cols + pad)]);
    p.rs_n = kn ? 1 : static_cast<std::ptrdiff_t>(cols + pad);
    p.rs_k = kn ? static_cast<std::ptrdiff_t>(cols + pad) : 1;
    if (with_bias) p.bias = test::random_floats(n, seed + 2);
    return p;
  }

  const float* bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }

  // want = A·Bᵀ + bias in float64, and bound = |bias| + Σ|a||b|, the scale of the rounding
  // error, both [m, n].
  void reference(std::vector<double>& want, std::vector<double>& bound) const {
    want.assign(m * n, 0.0);
    bound.assign(m * n, 0.0);
    k::reference::gemm(a.data(), lda, m, k, b.data(), rs_n, rs_k, n, bias_ptr(), want.data(),
                       static_cast<std::ptrdiff_t>(n));
    std::vector<float> abs_a(a), abs_b(b), abs_bias(bias);
    for (float& x : abs_a) x = std::abs(x);
    for (float& x : abs_b) x = std::abs(x);
    for (float& x : abs_bias) x = std::abs(x);
    k::reference::gemm(abs_a.data(), lda, m, k, abs_b.data(), rs_n, rs_k, n,
                       bias.empty() ? nullptr : abs_bias.data(), bound.data(),
                       static_cast<std::ptrdiff_t>(n));
  }
};

struct Packed {
  AlignedFloats b;
  AlignedFloats scratch;
};

Packed pack(k::Isa isa, const Problem& p) {
  Packed out{aligned_floats(k::gemm_packed_floats(isa, p.n, p.k)),
             aligned_floats(k::gemm_scratch_floats(isa))};
  k::gemm_pack_b(isa, p.b.data(), p.rs_n, p.rs_k, p.n, p.k, out.b.get());
  return out;
}

// C [m, ldc] full of kGuard, then columns n0 .. n0 + cols - 1 of every row computed in tiles of
// (tile_m, tile_n) rows and columns (tile_n a multiple of gemm_n_step).
std::vector<float> run(k::Isa isa, const Problem& p, const Packed& packed, std::size_t ldc,
                       std::size_t n0, std::size_t cols, std::size_t tile_m, std::size_t tile_n) {
  std::vector<float> c(p.m * ldc, kGuard);
  for (std::size_t i0 = 0; i0 < p.m; i0 += tile_m) {
    for (std::size_t j0 = n0; j0 < n0 + cols; j0 += tile_n) {
      k::GemmArgs g;
      g.a = p.a.data() + i0 * static_cast<std::size_t>(p.lda);
      g.lda = p.lda;
      g.packed_b = packed.b.get();
      g.n_total = p.n;
      g.m = std::min(tile_m, p.m - i0);
      g.k = p.k;
      g.n0 = j0;
      g.n = std::min(tile_n, n0 + cols - j0);
      g.bias = p.bias_ptr();
      g.c = c.data() + i0 * ldc;
      g.ldc = static_cast<std::ptrdiff_t>(ldc);
      g.scratch = packed.scratch.get();
      k::gemm(isa, g);
    }
  }
  return c;
}

// Worst |got - want| / tol over the block [0:m, n0:n0+cols], and whether every element outside
// it still holds kGuard. tol: float32 accumulation of k products (FMA or multiply-add) plus
// the bias is a dot product of k+1 terms, whose rounding error is at most
// γ_{k+1}·(|bias| + Σ|a||b|) with γ_j = j·u/(1 - j·u), u = 2^-24 (Higham, "Accuracy and
// Stability of Numerical Algorithms", 3.1). We allow (k + 2)·u·bound plus a tiny absolute
// floor for exact zeros: rigorous, yet a wrong or missing product (size ~|a||b|, about
// bound / k) exceeds it unless k is in the thousands.
struct Check {
  double worst = 0;
  bool guards_intact = true;
};
Check check(const Problem& p, const std::vector<float>& c, std::size_t ldc, std::size_t n0,
            std::size_t cols, const std::vector<double>& want, const std::vector<double>& bound) {
  Check out;
  const double u = std::ldexp(1.0, -24);
  for (std::size_t i = 0; i < p.m; ++i) {
    for (std::size_t j = 0; j < ldc; ++j) {
      const float got = c[i * ldc + j];
      if (j < n0 || j >= n0 + cols) {
        out.guards_intact = out.guards_intact && std::memcmp(&got, &kGuard, sizeof got) == 0;
        continue;
      }
      const double w = want[i * p.n + j];
      const double tol = static_cast<double>(p.k + 2) * u * bound[i * p.n + j] + 1e-30;
      const double err = std::isnan(got) ? INFINITY : std::abs(static_cast<double>(got) - w) / tol;
      out.worst = std::max(out.worst, err);
    }
  }
  return out;
}

const std::size_t kSizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129};
constexpr std::size_t kNumSizes = sizeof(kSizes) / sizeof(kSizes[0]);

}  // namespace

TEST_CASE("gemm matches the float64 reference on tail sizes", "[kernels][gemm]") {
  // Every (m, n) pair; k, the B layout and the bias cycle with the pair so that each of them
  // meets many m and n (all 3375 triples would take too long under sanitizers).
  for (std::size_t im = 0; im < kNumSizes; ++im) {
    for (std::size_t in = 0; in < kNumSizes; ++in) {
      const std::size_t m = kSizes[im], n = kSizes[in];
      const std::size_t kk = kSizes[(im * 7 + in * 3) % kNumSizes];
      const bool kn = (im + in) % 2 == 1, with_bias = (im + 2 * in) % 3 != 0;
      const std::size_t pad = (im + in) % 3;
      const Problem p = Problem::make(m, n, kk, kn, with_bias, pad, im * 100 + in);
      std::vector<double> want, bound;
      p.reference(want, bound);
      for (const k::Isa isa : test::supported_isas()) {
        INFO("isa " << k::isa_name(isa) << " m " << m << " n " << n << " k " << kk << " kn " << kn
                    << " bias " << with_bias << " pad " << pad);
        const Packed packed = pack(isa, p);
        const std::size_t ldc = n + 5;
        const std::vector<float> c = run(isa, p, packed, ldc, 0, n, m, n);
        const Check r = check(p, c, ldc, 0, n, want, bound);
        REQUIRE(r.worst <= 1.0);
        REQUIRE(r.guards_intact);
      }
    }
  }
}

TEST_CASE("gemm matches the reference on every k size", "[kernels][gemm]") {
  for (const k::Isa isa : test::supported_isas()) {
    for (const std::size_t kk : kSizes) {
      for (const bool kn : {false, true}) {
        const std::size_t m = 19, n = 37;
        INFO("isa " << k::isa_name(isa) << " k " << kk << " kn " << kn);
        const Problem p = Problem::make(m, n, kk, kn, true, 1, kk);
        std::vector<double> want, bound;
        p.reference(want, bound);
        const Packed packed = pack(isa, p);
        const std::vector<float> c = run(isa, p, packed, n, 0, n, m, n);
        REQUIRE(check(p, c, n, 0, n, want, bound).worst <= 1.0);
      }
    }
  }
}

TEST_CASE("gemm on large shapes (several k passes and A blocks)", "[kernels][gemm]") {
  struct Shape {
    std::size_t m, n, k;
  };
  const Shape shapes[] = {{300, 200, 768}, {517, 97, 1000}, {64, 768, 768}};
  for (const Shape s : shapes) {
    const Problem p = Problem::make(s.m, s.n, s.k, s.k == 1000, s.k != 1000, 0, s.m);
    std::vector<double> want, bound;
    p.reference(want, bound);  // once per shape: it dominates the run time under sanitizers
    for (const k::Isa isa : test::supported_isas()) {
      INFO("isa " << k::isa_name(isa) << " m " << s.m << " n " << s.n << " k " << s.k);
      const Packed packed = pack(isa, p);
      const std::vector<float> c = run(isa, p, packed, s.n, 0, s.n, s.m, s.n);
      REQUIRE(check(p, c, s.n, 0, s.n, want, bound).worst <= 1.0);
    }
  }
}

TEST_CASE("gemm tile splits give identical bits and leave other columns untouched",
          "[kernels][gemm]") {
  struct Shape {
    std::size_t m, n, k;
  };
  // k = 800 and 1700 take several k passes on every ISA; m = 200 spans several A blocks.
  const Shape shapes[] = {{200, 100, 800}, {65, 97, 33}, {110, 45, 1700}};
  for (const Shape s : shapes) {
    const Problem p = Problem::make(s.m, s.n, s.k, false, true, 2, s.n);
    std::vector<double> want, bound;
    p.reference(want, bound);
    for (const k::Isa isa : test::supported_isas()) {
      const std::size_t step = k::gemm_n_step(isa);
      const k::GemmBlock task = k::gemm_task_block(isa);
      REQUIRE(task.m >= 1);
      REQUIRE(task.n % step == 0);
      const Packed packed = pack(isa, p);
      const std::size_t ldc = s.n + 3;
      const std::vector<float> full = run(isa, p, packed, ldc, 0, s.n, s.m, s.n);
      REQUIRE(check(p, full, ldc, 0, s.n, want, bound).worst <= 1.0);
      struct Split {
        std::size_t tile_m, tile_n;
      };
      const Split splits[] = {{1, step},      {7, 2 * step},    {13, step},
                              {64, 3 * step}, {task.m, task.n}, {s.m, step}};
      for (const Split sp : splits) {
        INFO("isa " << k::isa_name(isa) << " m " << s.m << " n " << s.n << " k " << s.k << " tile "
                    << sp.tile_m << " x " << sp.tile_n);
        const std::vector<float> tiled = run(isa, p, packed, ldc, 0, s.n, sp.tile_m, sp.tile_n);
        REQUIRE(std::memcmp(tiled.data(), full.data(), full.size() * sizeof(float)) == 0);
      }
      // A column range starting at n0 > 0: same bits there, guards everywhere else.
      for (std::size_t n0 = step; n0 < s.n; n0 += 2 * step) {
        const std::size_t cols = std::min(s.n - n0, step + 3);  // ends mid-panel
        INFO("isa " << k::isa_name(isa) << " n0 " << n0 << " cols " << cols);
        const std::vector<float> part = run(isa, p, packed, ldc, n0, cols, 5, step);
        const Check r = check(p, part, ldc, n0, cols, want, bound);
        REQUIRE(r.guards_intact);
        REQUIRE(r.worst <= 1.0);
        for (std::size_t i = 0; i < s.m; ++i) {
          REQUIRE(std::memcmp(&part[i * ldc + n0], &full[i * ldc + n0], cols * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST_CASE("gemm computes only the requested rows", "[kernels][gemm]") {
  for (const k::Isa isa : test::supported_isas()) {
    const std::size_t step = k::gemm_n_step(isa);
    const std::size_t m = 40, n = 3 * step + 5, kk = 70;
    const Problem p = Problem::make(m, n, kk, true, true, 0, 7);
    std::vector<double> want, bound;
    p.reference(want, bound);
    const Packed packed = pack(isa, p);
    // Rows 9 .. 9 + 13 - 1 of C, the rest of the buffer must keep its guards.
    std::vector<float> c(m * n, kGuard);
    k::GemmArgs g;
    g.a = p.a.data() + 9 * kk;
    g.lda = p.lda;
    g.packed_b = packed.b.get();
    g.n_total = n;
    g.m = 13;
    g.k = kk;
    g.n0 = step;
    g.n = n - step;
    g.bias = p.bias_ptr();
    g.c = c.data() + 9 * n;
    g.ldc = static_cast<std::ptrdiff_t>(n);
    g.scratch = packed.scratch.get();
    k::gemm(isa, g);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        INFO("isa " << k::isa_name(isa) << " row " << i << " col " << j);
        const float got = c[i * n + j];
        if (i >= 9 && i < 22 && j >= step) {
          const double tol = (kk + 2) * std::ldexp(1.0, -24) * bound[i * n + j];
          REQUIRE(std::abs(static_cast<double>(got) - want[i * n + j]) <= tol);
        } else {
          REQUIRE(std::memcmp(&got, &kGuard, sizeof got) == 0);
        }
      }
    }
  }
}
