// The unfused path's masked row softmax against its float64 twin, and the accuracy of the
// kernels' vector exp, on every supported ISA.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

// Distance in units in the last place between a float and a double (the double rounded to
// float first, so 0 means "correctly rounded"); both positive normal numbers.
double ulp_error(float got, double want) {
  const auto w = static_cast<float>(want);
  std::int32_t gi, wi;
  std::memcpy(&gi, &got, 4);
  std::memcpy(&wi, &w, 4);
  return std::abs(static_cast<double>(gi) - static_cast<double>(wi));
}

std::vector<double> run_reference(const std::vector<float>& s, std::size_t rows, std::size_t cols,
                                  float scale, bool causal, std::ptrdiff_t offset,
                                  std::size_t window) {
  std::vector<double> want(rows * cols);
  k::reference::masked_softmax_rows(s.data(), static_cast<std::ptrdiff_t>(cols), rows, cols, scale,
                                    causal, offset, window, want.data(),
                                    static_cast<std::ptrdiff_t>(cols));
  return want;
}

}  // namespace

TEST_CASE("vector exp: accuracy and special values", "[kernels][softmax][exp]") {
  // Dense sweep of [-87.3, 88.3] (the float range where exp is a normal number) plus the
  // softmax's usual range.
  std::vector<float> x;
  for (double t = -87.3; t <= 88.3; t += 0.00037) x.push_back(static_cast<float>(t));
  x.push_back(0.0f);
  const float log2e = 1.44269504088896340736f;
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> y(x.size());
    k::vector_exp(isa, x.data(), y.data(), x.size());
    double core_ulp = 0, rel = 0, rel_softmax = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      // The kernels evaluate exp(x) as exp2(t) with t = x * log2(e) rounded to float (the
      // scores already carry log2(e)); the exp2 core is measured against that same t.
      const float t = x[i] * log2e;
      if (t > -126.0f)
        core_ulp = std::max(core_ulp, ulp_error(y[i], std::exp2(static_cast<double>(t))));
      const double e = std::exp(static_cast<double>(x[i]));
      const double r = std::abs(y[i] - e) / e;
      if (t > -126.0f) rel = std::max(rel, r);
      if (x[i] >= -20.0f && x[i] <= 0.0f) rel_softmax = std::max(rel_softmax, r);
    }
    // Measured on this project's machines: core <= 1 ulp, end-to-end 3.9e-6 (the rounding of
    // x * log2(e) costs up to |t| * 2^-24), 9.7e-7 on [-20, 0]; docs/kernels-attention.md.
    // `attn_tests "[exp]" -s` prints the numbers.
    INFO("vector exp (" << k::isa_name(isa) << "): exp2 core max " << core_ulp
                        << " ulp; exp max rel " << rel << " on [-87.3, 88.3], " << rel_softmax
                        << " on [-20, 0]");
    REQUIRE(core_ulp <= 2.0);
    REQUIRE(rel <= 1e-5);
    REQUIRE(rel_softmax <= 2e-6);

    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> special = {-inf, -1000.0f, -200.0f, 0.0f, inf, 1000.0f, std::nanf("")};
    std::vector<float> ys(special.size());
    k::vector_exp(isa, special.data(), ys.data(), special.size());
    REQUIRE(ys[0] == 0.0f);
    REQUIRE(std::signbit(ys[0]) == false);
    REQUIRE(ys[1] == 0.0f);
    REQUIRE(ys[2] == 0.0f);
    REQUIRE(ys[3] == 1.0f);
    REQUIRE(ys[4] == inf);
    REQUIRE(ys[5] == inf);
    REQUIRE(std::isnan(ys[6]));
  }
}

TEST_CASE("masked softmax rows match the reference", "[kernels][softmax]") {
  const auto rows = GENERATE(1, 7, 65);
  const auto cols = GENERATE(1, 7, 63, 65, 300);
  const bool causal = GENERATE(false, true);
  const auto window = GENERATE(0, 5);
  CAPTURE(rows, cols, causal, window);
  const std::ptrdiff_t offset = static_cast<std::ptrdiff_t>(cols) - rows;  // bottom-right
  auto s = test::random_floats(rows * cols, rows * 1000 + cols, -4.0f, 4.0f);
  // NaN/Inf where the mask hides them must not matter.
  if (causal) {
    for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r)
      for (std::size_t c = 0; c < static_cast<std::size_t>(cols); ++c) {
        const auto limit = static_cast<std::ptrdiff_t>(r) + offset;
        const auto cc = static_cast<std::ptrdiff_t>(c);
        const bool vis = cc <= limit && (window == 0 || cc > limit - window);
        if (!vis)
          s[r * cols + c] = (c % 2) ? std::nanf("") : std::numeric_limits<float>::infinity();
      }
  }
  const auto want = run_reference(s, rows, cols, 0.3f, causal, offset, window);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    auto got = s;
    k::masked_softmax_rows(isa, got.data(), static_cast<std::ptrdiff_t>(cols), rows, cols, 0.3f,
                           causal, offset, window);
    REQUIRE(test::max_error(got, want) <= 1.0);
  }
}

TEST_CASE("masked softmax rows: fully masked rows are 0, a visible NaN makes its row NaN",
          "[kernels][softmax]") {
  const std::size_t rows = 6, cols = 40;
  auto s = test::random_floats(rows * cols, 17);
  s[3 * cols + 2] = std::nanf("");  // masked for row 3 (it sees column 0 only)
  s[5 * cols + 2] = std::nanf("");  // visible to row 5
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    auto got = s;
    // Offset -3: rows 0..2 see nothing; row r >= 3 sees columns <= r - 3.
    k::masked_softmax_rows(isa, got.data(), cols, rows, cols, 1.0f, true, -3, 0);
    for (std::size_t c = 0; c < cols; ++c) {
      for (std::size_t r = 0; r < 3; ++r) REQUIRE(got[r * cols + c] == 0.0f);
      REQUIRE(got[3 * cols + c] == (c == 0 ? 1.0f : 0.0f));  // only column 0 visible
      REQUIRE(std::isnan(got[5 * cols + c]));                // its NaN is visible
    }
    const auto want = run_reference(s, rows, cols, 1.0f, true, -3, 0);
    REQUIRE(test::max_error(got, want) <= 1.0);
  }
}
