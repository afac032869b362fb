// Vector math shared by the attention, decode and softmax kernels: 2^t, NaN-explicit max/min,
// horizontal folds (templated on the arch).
//
// exp2_fast algorithm: round-to-nearest range reduction t = n + f, |f| <= 1/2, done with the
// 1.5 * 2^23 "magic number" add (which also leaves n + 127 in the low mantissa bits, so one
// shift builds 2^n), then a degree-6 polynomial for 2^f fitted for relative error (minimax
// weighted least squares, 2e-9 before float rounding). 11 vector ops, no table, no select.
// Accuracy (measured by tests/test_kernels_softmax.cpp): <= 2 ulp against exp2 of the same
// float argument. The kernels fold log2(e) into the score scale so they never multiply by it.
// Edge cases: t <= -127 (and -inf) gives exactly +0 (results below 2^-126 flush to zero, a
// relative error of 1e-38 against the softmax sum, which is >= 1); t = 0 gives exactly 1
// (the online softmax relies on alpha = 1 being exact); NaN gives NaN. Arguments above 128
// are not handled here: the softmax arguments are s - max <= 0 (VectorExp clamps them).
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

// GCC 12 reports a false -Wmaybe-uninitialized (or, depending on inlining, -Wuninitialized)
// inside _mm512_max_ps, _mm512_unpack*_ps (their _mm512_undefined_ps pass-through operand,
// GCC bug 105593) wherever they are inlined; the kernels reach them only through the wrappers
// below, inside this push/pop.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace attn::kernels {

/// log2(e) as a float: the kernels multiply scores by scale * kLog2e and then use exp2.
inline constexpr float kLog2e = 1.44269504088896340736f;

/// Lane-wise max; where either lane is NaN it returns b's lane (x86 max semantics), so NaN
/// in b survives and NaN in a is dropped. Every max of the kernels goes through here.
template <class Arch>
inline xsimd::batch<float, Arch> max_nan_b(xsimd::batch<float, Arch> a,
                                           xsimd::batch<float, Arch> b) noexcept {
  return xsimd::max(a, b);
}

/// Lane-wise min with the same NaN rule as max_nan_b.
template <class Arch>
inline xsimd::batch<float, Arch> min_nan_b(xsimd::batch<float, Arch> a,
                                           xsimd::batch<float, Arch> b) noexcept {
  return xsimd::min(a, b);
}

/// Returns 2^t for t <= 128; NaN stays NaN, t <= -127 gives +0 (see the file comment).
template <class Arch>
inline xsimd::batch<float, Arch> exp2_fast(xsimd::batch<float, Arch> t) noexcept {
  using B = xsimd::batch<float, Arch>;
  using I = xsimd::batch<std::int32_t, Arch>;
  t = max_nan_b(B(-127.0f), t);  // NaN in t survives the clamp

  // 1.5 * 2^23 + 127: the sum's ulp is 1, so u - kShift is t rounded to nearest, and the low
  // mantissa bits of u hold n + 127 >= 0; shifting them into the exponent field gives 2^n
  // (n = -127 gives the bit pattern of +0).
  constexpr float kShift = 12582912.0f + 127.0f;
  const B u = t + B(kShift);
  const B f = t - (u - B(kShift));
  B p(1.5353359e-4f);
  p = xsimd::fma(p, f, B(1.3398876e-3f));
  p = xsimd::fma(p, f, B(9.6184369e-3f));
  p = xsimd::fma(p, f, B(5.5503324e-2f));
  p = xsimd::fma(p, f, B(2.4022648e-1f));
  p = xsimd::fma(p, f, B(6.9314718e-1f));
  p = xsimd::fma(p, f, B(1.0f));
  const B scale = xsimd::bitwise_cast<B>(xsimd::bitwise_cast<I>(u) << 23);
  return p * scale;
}

/// Returns tanh(x): an odd Taylor polynomial (to x^11) for |x| < 0.3, where the exp form
/// below would lose relative accuracy to cancellation (its error there is < 1e-9), and
/// sign(x) * (1 - 2 / (exp(2|x|) + 1)) above, with exp from exp2_fast (argument clamped at
/// 126, so large |x| saturates to exactly +-1 and +-inf gives +-1). NaN stays NaN. Relative
/// error ~2e-7 (tests/test_kernels_softcap.cpp measures it).
template <class Arch>
inline xsimd::batch<float, Arch> tanh_fast(xsimd::batch<float, Arch> x) noexcept {
  using B = xsimd::batch<float, Arch>;
  const B ax = xsimd::abs(x);
  // 2|x| log2(e); min keeps NaN (second operand).
  const B e = exp2_fast(min_nan_b(B(126.0f), ax * B(2.0f * kLog2e)));
  B big = B(1.0f) - B(2.0f) / (e + B(1.0f));
  big = xsimd::select(x < B(0.0f), -big, big);
  const B x2 = x * x;
  B p(-1382.0f / 155925.0f);
  p = xsimd::fma(p, x2, B(62.0f / 2835.0f));
  p = xsimd::fma(p, x2, B(-17.0f / 315.0f));
  p = xsimd::fma(p, x2, B(2.0f / 15.0f));
  p = xsimd::fma(p, x2, B(-1.0f / 3.0f));
  const B small = xsimd::fma(p * x2, x, x);
  return xsimd::select(ax < B(0.3f), small, big);
}

/// The score modifiers (kernels.hpp: softcap, ALiBi) in the kernels' log2 units: a score
/// t = s * log2(e) becomes cap2 * tanh(t / cap2) with cap2 = softcap * log2(e) (the same as
/// softcap * tanh(s / softcap), in log2 units), then t + slope * log2(e) * (key position -
/// query position). Only the kernels' separate "modified" branches use it.
struct ScoreModsLog2 {
  float cap = 0;      ///< softcap * log2(e); 0: no soft-capping
  float inv_cap = 0;  ///< 1 / cap
  float slope = 0;    ///< alibi_slope * log2(e); 0: no bias
  ScoreModsLog2(float softcap, float alibi_slope) noexcept
      : cap(softcap > 0 ? softcap * kLog2e : 0.0f),
        inv_cap(softcap > 0 ? 1.0f / (softcap * kLog2e) : 0.0f),
        slope(alibi_slope * kLog2e) {}
  bool any() const noexcept { return cap > 0 || slope != 0; }
  /// t: scores in log2 units; rel: key position - query position (exact as floats below 2^24).
  template <class Arch>
  xsimd::batch<float, Arch> apply(xsimd::batch<float, Arch> t,
                                  xsimd::batch<float, Arch> rel) const noexcept {
    using B = xsimd::batch<float, Arch>;
    if (cap > 0) t = B(cap) * tanh_fast(t * B(inv_cap));
    if (slope != 0) t = xsimd::fma(B(slope), rel, t);
    return t;
  }
};

/// 4x4 transposes inside every 128-bit block: block b of t[k] holds element 4b + k of x[0],
/// x[1], x[2], x[3] (xsimd's zip is an unpack within 128-bit blocks on every x86 ISA).
template <class Arch>
inline void transpose4_in_blocks(const xsimd::batch<float, Arch>* x,
                                 xsimd::batch<float, Arch>* t) noexcept {
  using B = xsimd::batch<float, Arch>;
  using D = xsimd::batch<double, Arch>;
  const B a = xsimd::zip_lo(x[0], x[1]), b = xsimd::zip_hi(x[0], x[1]);
  const B c = xsimd::zip_lo(x[2], x[3]), d = xsimd::zip_hi(x[2], x[3]);
  auto lo = [](B u, B v) {
    return xsimd::bitwise_cast<B>(
        xsimd::zip_lo(xsimd::bitwise_cast<D>(u), xsimd::bitwise_cast<D>(v)));
  };
  auto hi = [](B u, B v) {
    return xsimd::bitwise_cast<B>(
        xsimd::zip_hi(xsimd::bitwise_cast<D>(u), xsimd::bitwise_cast<D>(v)));
  };
  t[0] = lo(a, c);
  t[1] = hi(a, c);
  t[2] = lo(b, d);
  t[3] = hi(b, d);
}

/// Returns the batch whose lane i is the sum of rows[i]'s lanes (rows: B::size batches), as
/// xsimd::haddp; wrapped here for the GCC 12 warning above (_mm512_shuffle_f32x4). xsimd
/// 8.1's AVX-512 haddp returns wrong lanes, so 16-lane batches sum each row with hadd (which
/// the AVX-512 kernels have always used) instead.
template <class Arch>
inline xsimd::batch<float, Arch> hsum_rows(const xsimd::batch<float, Arch>* rows) noexcept {
  using B = xsimd::batch<float, Arch>;
  if constexpr (B::size == 16) {
    alignas(64) float sums[B::size];
    for (std::size_t i = 0; i < B::size; ++i) sums[i] = xsimd::hadd(rows[i]);
    return B::load_aligned(sums);
  } else {
    return xsimd::haddp(rows);
  }
}

/// Horizontal max of a batch (for per-row maxima; NaN handling as xsimd::max).
template <class Arch>
inline float hmax(xsimd::batch<float, Arch> x) noexcept {
  alignas(64) float lanes[xsimd::batch<float, Arch>::size];
  x.store_aligned(lanes);
  float m = lanes[0];
  for (std::size_t i = 1; i < xsimd::batch<float, Arch>::size; ++i) m = m > lanes[i] ? m : lanes[i];
  return m;
}

}  // namespace attn::kernels

#pragma GCC diagnostic pop
