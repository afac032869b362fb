// Loads of 16-bit weights and cache rows (bfloat16 or IEEE binary16 bits) and of int8 cache
// rows, widened to one f32 vector, per architecture. Only the kernel tables' objects (built with
// their ISA's flags) include this.
//
// bfloat16 is the top half of a float32, so widening is a zero-extend and a 16-bit shift.
// binary16 uses F16C's vcvtph2ps on AVX2 (-mf16c, checked at run time with avx2) and AVX-512F;
// SSE2 has no conversion instruction and rebiases with integer operations and one multiply
// (F. Giesen, "half_to_float_SSE2", 2012): exact for normals, subnormals, Inf and NaN
// (unless the caller sets denormals-are-zero, which attn never does).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace attn::kernels {

template <class Arch, class Enable = void>
struct Widen16;

template <class Arch>
struct Widen16<Arch, std::enable_if_t<std::is_same_v<Arch, xsimd::sse2>>> {
  using Batch = xsimd::batch<float, Arch>;
  static Batch bf16(const std::uint16_t* p) noexcept {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return Batch(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
  }
  static Batch f16(const std::uint16_t* p) noexcept {
    const __m128i h = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                                         _mm_setzero_si128());
    const __m128i expmant = _mm_and_si128(h, _mm_set1_epi32(0x7FFF));
    const __m128i sign = _mm_slli_epi32(_mm_xor_si128(h, expmant), 16);
    // Exponent and mantissa moved to f32's place, then scaled by 2^(127 - 15): rebiases
    // normals and normalises subnormals exactly.
    const __m128 scaled = _mm_mul_ps(_mm_castsi128_ps(_mm_slli_epi32(expmant, 13)),
                                     _mm_castsi128_ps(_mm_set1_epi32((254 - 15) << 23)));
    // Inf and NaN (exponent 31): force f32's all-ones exponent, keep the mantissa.
    const __m128i infnan =
        _mm_and_si128(_mm_cmpgt_epi32(expmant, _mm_set1_epi32(0x7BFF)), _mm_set1_epi32(255 << 23));
    return Batch(_mm_or_ps(scaled, _mm_castsi128_ps(_mm_or_si128(sign, infnan))));
  }
  static Batch i8(const std::int8_t* p) noexcept {
    int bytes;
    std::memcpy(&bytes, p, sizeof bytes);
    __m128i x = _mm_cvtsi32_si128(bytes);
    x = _mm_unpacklo_epi8(x, x);  // each byte in the top of a 32-bit lane, then sign-extended
    x = _mm_unpacklo_epi16(x, x);
    return Batch(_mm_cvtepi32_ps(_mm_srai_epi32(x, 24)));
  }
};

template <class Arch>
struct Widen16<Arch, std::enable_if_t<std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>>> {
  using Batch = xsimd::batch<float, Arch>;
  static Batch bf16(const std::uint16_t* p) noexcept {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return Batch(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  static Batch f16(const std::uint16_t* p) noexcept {
    return Batch(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static Batch i8(const std::int8_t* p) noexcept {
    return Batch(_mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
  }
};

template <class Arch>
struct Widen16<Arch, std::enable_if_t<std::is_same_v<Arch, xsimd::avx512bw>>> {
  using Batch = xsimd::batch<float, Arch>;
  static Batch bf16(const std::uint16_t* p) noexcept {
    // The zero-masking forms: GCC 12's unmasked ones start from _mm512_undefined and warn
    // (-Wmaybe-uninitialized); all 16 lanes are selected, so the instruction is the same.
    const __m512i w = _mm512_maskz_cvtepu16_epi32(
        __mmask16(0xFFFF), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return Batch(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xFFFF), w, 16)));
  }
  static Batch f16(const std::uint16_t* p) noexcept {
    return Batch(_mm512_maskz_cvtph_ps(__mmask16(0xFFFF),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  }
  static Batch i8(const std::int8_t* p) noexcept {
    const __m512i w = _mm512_maskz_cvtepi8_epi32(
        __mmask16(0xFFFF), _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return Batch(_mm512_maskz_cvtepi32_ps(__mmask16(0xFFFF), w));
  }
};

// ---- Cache rows (kernels.hpp, "Paged keys and values") ----------------------------------

// The storage type of one cache element of type T.
template <KvType T>
using KvElem =
    std::conditional_t<T == KvType::kF32, float,
                       std::conditional_t<T == KvType::kInt8, std::int8_t, std::uint16_t>>;

// W consecutive elements of a cache row, widened to f32 (f32: the plain load).
template <KvType T, class Arch>
xsimd::batch<float, Arch> load_kv(const KvElem<T>* p) noexcept {
  if constexpr (T == KvType::kF32) {
    return xsimd::batch<float, Arch>::load_unaligned(p);
  } else if constexpr (T == KvType::kBf16) {
    return Widen16<Arch>::bf16(p);
  } else if constexpr (T == KvType::kF16) {
    return Widen16<Arch>::f16(p);
  } else {
    return Widen16<Arch>::i8(p);
  }
}

// One element widened (head_dim tails): f16 through the vector conversion of a padded batch.
template <KvType T, class Arch>
float kv_scalar(const KvElem<T>* p) noexcept {
  if constexpr (T == KvType::kF32) {
    return *p;
  } else if constexpr (T == KvType::kBf16) {
    return std::bit_cast<float>(std::uint32_t{*p} << 16);
  } else if constexpr (T == KvType::kF16) {
    alignas(64) std::uint16_t one[xsimd::batch<float, Arch>::size] = {};
    one[0] = *p;
    return Widen16<Arch>::f16(one).get(0);
  } else {
    return static_cast<float>(*p);
  }
}

namespace {  // internal linkage: no ODR clash between the per-ISA copies

// Calls f(std::integral_constant<KvType, t>) for the run-time type t.
template <class F>
void with_kv_type(KvType t, F&& f) noexcept {
  switch (t) {
    case KvType::kF32:
      f(std::integral_constant<KvType, KvType::kF32>{});
      return;
    case KvType::kBf16:
      f(std::integral_constant<KvType, KvType::kBf16>{});
      return;
    case KvType::kF16:
      f(std::integral_constant<KvType, KvType::kF16>{});
      return;
    case KvType::kInt8:
      f(std::integral_constant<KvType, KvType::kInt8>{});
      return;
  }
}

}  // namespace

}  // namespace attn::kernels
