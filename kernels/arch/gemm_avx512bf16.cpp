// The bf16 dot-product GEMM on AVX512-BF16 (vdpbf16ps), built with -mavx512bf16 when the
// compiler has it (kernels/CMakeLists.txt) and called only after a run-time check of the CPU
// (dispatch.cpp). The driver is impl/gemm_dot.hpp; this file supplies its vector operations.
// Everything here has internal linkage: no inline function compiled with these flags is
// shared with the other ISAs (tools/check_isa_symbols.sh).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include "kernels/impl/gemm_dot.hpp"

namespace attn::kernels {
namespace {

struct Avx512Bf16Ops {
  using Acc = __m512;
  using APair = __m512i;
  using BVec = __m512i;
  static Acc zero() noexcept { return _mm512_setzero_ps(); }
  static Acc load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static void store(float* p, Acc x) noexcept { _mm512_storeu_ps(p, x); }
  static Acc add(Acc x, Acc y) noexcept { return _mm512_add_ps(x, y); }
  static BVec load_b(const std::uint16_t* p) noexcept { return _mm512_load_si512(p); }
  static APair bcast_a(const std::uint16_t* p) noexcept {
    int pair;
    std::memcpy(&pair, p, sizeof pair);  // the two bf16 as one word, without aliasing UB
    return _mm512_set1_epi32(pair);
  }
  static Acc dot(Acc acc, APair a, BVec b) noexcept {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
  }
  // vcvtne2ps2bf16: nearest even, NaN quietened, f32 subnormals read as zero (the emulation
  // flushes them too). The tail uses masked loads and stores: nothing past n is touched.
  static void narrow(const float* s, std::size_t n, std::uint16_t* d) noexcept {
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i));
      _mm512_storeu_si512(d + i, (__m512i)r);
    }
    if (i < n) {
      const std::size_t left = n - i;
      const auto lo = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
      const auto hi = static_cast<__mmask16>(left <= 16 ? 0u : (1u << (left - 16)) - 1u);
      const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + i + 16),
                                             _mm512_maskz_loadu_ps(lo, s + i));
      const auto all = static_cast<__mmask32>((std::uint64_t{1} << left) - 1u);
      _mm512_mask_storeu_epi16(d + i, all, (__m512i)r);
    }
  }
};

}  // namespace

namespace detail {
[[gnu::noinline]] void gemm_dot_avx512bf16(const GemmArgs& args) noexcept {
  GemmDotDriver<Avx512Bf16Ops>::run(args);
}
}  // namespace detail
}  // namespace attn::kernels
