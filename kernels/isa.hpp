// Instruction sets the kernels are built for, and run-time selection among them.
#pragma once

#include <cstdint>

namespace attn::kernels {

/// An instruction set with its own compiled copy of every kernel.
enum class Isa : std::uint8_t {
  kSse2 = 0,    ///< baseline x86-64 (xsimd::sse2), 4 floats per vector
  kAvx2 = 1,    ///< AVX2 + FMA (xsimd::fma3<xsimd::avx2>), 8 floats per vector
  kAvx512 = 2,  ///< AVX-512 F/CD/DQ/BW (xsimd::avx512bw), 16 floats per vector
};
inline constexpr int kIsaCount = 3;

/// Returns "sse2", "avx2" or "avx512".
const char* isa_name(Isa isa) noexcept;
/// True when this binary contains kernels for `isa`.
bool isa_compiled(Isa isa) noexcept;
/// True when compiled in and this CPU (and OS) can run it.
bool isa_supported(Isa isa) noexcept;
/// Returns the best supported instruction set, chosen with xsimd::dispatch over the
/// compiled list.
Isa best_isa() noexcept;

}  // namespace attn::kernels
