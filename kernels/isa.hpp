// Instruction sets the kernels are built for, run-time selection among them, and the one
// mapping between them and the public attn::Isa.
#pragma once

#include <cstdint>
#include <optional>

#include "attn/isa.hpp"

namespace attn::kernels {

/// An instruction set with its own compiled copy of every kernel.
enum class Isa : std::uint8_t {
  kSse2,    ///< baseline x86-64 (xsimd::sse2), 4 floats per vector
  kAvx2,    ///< AVX2 + FMA (xsimd::fma3<xsimd::avx2>), 8 floats per vector
  kAvx512,  ///< AVX-512 F/CD/DQ/BW (xsimd::avx512bw), 16 floats per vector
};
/// Every instruction set, best first.
inline constexpr Isa kAllIsas[] = {Isa::kAvx512, Isa::kAvx2, Isa::kSse2};

/// Returns "sse2", "avx2" or "avx512" (the names attn::to_string(attn::Isa) gives too).
const char* isa_name(Isa isa) noexcept;
/// True when this binary contains kernels for `isa`.
bool isa_compiled(Isa isa) noexcept;
/// True when compiled in and this CPU (and OS) can run it.
bool isa_supported(Isa isa) noexcept;
/// Returns the best supported instruction set, chosen with xsimd::dispatch over the
/// compiled list.
Isa best_isa() noexcept;

/// Maps the public instruction set to the kernels' (nullopt for attn::Isa::kAuto, which the
/// caller resolves first).
constexpr std::optional<Isa> from_public(attn::Isa isa) noexcept {
  switch (isa) {
    case attn::Isa::kSse2:
      return Isa::kSse2;
    case attn::Isa::kAvx2:
      return Isa::kAvx2;
    case attn::Isa::kAvx512:
      return Isa::kAvx512;
    case attn::Isa::kAuto:
      break;
  }
  return std::nullopt;
}

/// Maps the kernels' instruction set to the public one.
constexpr attn::Isa to_public(Isa isa) noexcept {
  switch (isa) {
    case Isa::kSse2:
      return attn::Isa::kSse2;
    case Isa::kAvx2:
      return attn::Isa::kAvx2;
    case Isa::kAvx512:
      return attn::Isa::kAvx512;
  }
  return attn::Isa::kSse2;
}

}  // namespace attn::kernels
