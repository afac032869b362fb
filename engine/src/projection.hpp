// Linear projections y = x Wᵀ + b on packed weights: packing once at creation, and the one
// GEMM loop every entry point's projections run through.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "buffer.hpp"
#include "kernels/isa.hpp"

namespace attn {
struct EngineState;
}

namespace attn::detail {

struct Workspace;

/// One packed projection: y = x Wᵀ + b with W [n, k] packed for the engine's ISA.
struct PackedLinear {
  AlignedBuffer packed;
  std::vector<float> bias;  ///< [n] or empty
  std::size_t n = 0;
  std::size_t k = 0;
};

/// Packs the rows of `parts` (each [rows_i, k], nn.Linear layout) stacked into one
/// projection, with the `biases` (each [rows_i]) concatenated (none: no bias).
Status pack_linear(kernels::Isa isa, std::initializer_list<const Tensor*> parts,
                   std::initializer_list<const Tensor*> biases, PackedLinear& lin);

/// C[m, n] = A[m, k] · Wᵀ + b over the engine's scheduler, split into output tiles; each
/// task uses its worker's scratch in ws.
void run_linear(const EngineState& st, const Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc);

}  // namespace attn::detail
