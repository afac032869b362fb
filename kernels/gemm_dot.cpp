// Entry points of the bf16 dot-product GEMM (kernels.hpp): the B packing, the dispatch to the
// AVX512-BF16 copy (arch/gemm_avx512bf16.cpp), and the same driver on a scalar emulation of
// vdpbf16ps, which any CPU runs (the tests check the driver's indexing, tails and passes with
// it on machines without AVX512-BF16). Built with the baseline flags.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/half.hpp"
#include "kernels/impl/gemm_dot.hpp"
#include "kernels/kernels.hpp"

namespace attn::kernels {

#if ATTN_HAVE_AVX512BF16
namespace detail {
void gemm_dot_avx512bf16(const GemmArgs& args) noexcept;  // arch/gemm_avx512bf16.cpp
}  // namespace detail
#endif

namespace {

// vdpbf16ps as the Intel SDM defines it, one lane at a time: per lane i,
// acc += a.hi * b[i].hi, then acc += a.lo * b[i].lo, each a single-rounding f32 FMA (nearest
// even), bf16 subnormal inputs read as zero and subnormal results flushed to zero.
struct EmulatedBf16Ops {
  struct Acc {
    float v[16];
  };
  using APair = std::uint32_t;
  struct BVec {
    std::uint32_t v[16];
  };
  static Acc zero() noexcept { return {}; }
  static Acc load(const float* p) noexcept {
    Acc x;
    std::memcpy(x.v, p, sizeof x.v);
    return x;
  }
  static void store(float* p, const Acc& x) noexcept { std::memcpy(p, x.v, sizeof x.v); }
  static Acc add(Acc x, const Acc& y) noexcept {
    for (int i = 0; i < 16; ++i) x.v[i] += y.v[i];
    return x;
  }
  static BVec load_b(const std::uint16_t* p) noexcept {
    BVec b;
    std::memcpy(b.v, p, sizeof b.v);
    return b;
  }
  static APair bcast_a(const std::uint16_t* p) noexcept {
    APair pair;
    std::memcpy(&pair, p, sizeof pair);
    return pair;
  }
  static float daz(std::uint32_t h) noexcept {
    return (h & 0x7F80u) == 0 ? bf16_to_f32(static_cast<std::uint16_t>(h & 0x8000u))
                              : bf16_to_f32(static_cast<std::uint16_t>(h));
  }
  static float ftz(float x) noexcept {
    return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
  }
  static Acc dot(Acc acc, APair a, const BVec& b) noexcept {
    for (int i = 0; i < 16; ++i) {
      float s = acc.v[i];
      s = ftz(std::fma(daz(a >> 16), daz(b.v[i] >> 16), s));
      s = ftz(std::fma(daz(a & 0xFFFFu), daz(b.v[i] & 0xFFFFu), s));
      acc.v[i] = s;
    }
    return acc;
  }
  // vcvtne2ps2bf16: f32 subnormals read as zero, then nearest even.
  static void narrow(const float* s, std::size_t n, std::uint16_t* d) noexcept {
    for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(ftz(s[i])).bits;
  }
};

}  // namespace

std::size_t gemm_dot_packed_elems(std::size_t n, std::size_t k) noexcept {
  return GemmDotBlocking::packed_elems(n, k);
}

void gemm_dot_pack_b(const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                     std::size_t n, std::size_t k, std::uint16_t* packed) noexcept {
  using Blk = GemmDotBlocking;
  const std::size_t k2 = Blk::k_pairs(k);
  for (std::size_t j0 = 0; j0 < n; j0 += Blk::kNr) {
    std::uint16_t* dst = packed + j0 * k2 * 2;
    for (std::size_t p2 = 0; p2 < k2; ++p2) {
      for (std::size_t c = 0; c < Blk::kNr; ++c) {
        for (std::size_t h = 0; h < 2; ++h) {
          const std::size_t j = j0 + c, p = 2 * p2 + h;
          dst[(p2 * Blk::kNr + c) * 2 + h] =
              (j < n && p < k)
                  ? b[static_cast<std::ptrdiff_t>(j) * rs_n + static_cast<std::ptrdiff_t>(p) * rs_k]
                  : std::uint16_t{0};
        }
      }
    }
  }
}

std::size_t gemm_dot_n_step() noexcept { return GemmDotBlocking::kNr; }
std::size_t gemm_dot_scratch_floats() noexcept { return GemmDotBlocking::scratch_floats(); }
GemmBlock gemm_dot_task_block() noexcept {
  return {GemmDotBlocking::kTaskM, GemmDotBlocking::kTaskN};
}

void gemm_bf16_dot(const GemmArgs& args) noexcept {
#if ATTN_HAVE_AVX512BF16
  static const bool has_dot = bf16_dot_supported();
  if (has_dot) return detail::gemm_dot_avx512bf16(args);
#endif
  GemmDotDriver<EmulatedBf16Ops>::run(args);
}

void gemm_bf16_dot_emulated(const GemmArgs& args) noexcept {
  GemmDotDriver<EmulatedBf16Ops>::run(args);
}

}  // namespace attn::kernels
