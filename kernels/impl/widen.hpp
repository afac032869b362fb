// Loads of 16-bit weights (bfloat16 or IEEE binary16 bits) widened to one f32 vector, per
// architecture. Only the kernel tables' objects (built with their ISA's flags) include this.
//
// bfloat16 is the top half of a float32, so widening is a zero-extend and a 16-bit shift.
// binary16 uses F16C's vcvtph2ps on AVX2 (-mf16c, checked at run time with avx2) and AVX-512F;
// SSE2 has no conversion instruction and rebiases with integer operations and one multiply
// (F. Giesen, "half_to_float_SSE2", 2012): exact for normals, subnormals, Inf and NaN
// (unless the caller sets denormals-are-zero, which attn never does).
#pragma once

#include <cstdint>
#include <type_traits>

#include <immintrin.h>

#include <xsimd/xsimd.hpp>

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
};

}  // namespace attn::kernels
