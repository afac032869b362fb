// Linear projections y = x Wᵀ + b on packed weights: packing once at creation, and the one
// GEMM loop every entry point's projections run through.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

#include "attn/config.hpp"
#include "attn/dtype.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "buffer.hpp"
#include "kernels/isa.hpp"
#include "kernels/kernels.hpp"

namespace attn {
struct EngineState;
}

namespace attn::detail {

struct Workspace;

/// One packed projection: y = x Wᵀ + b with W [n, k] packed for the engine's ISA, its
/// elements in `type` (f32, or bf16/f16 bits: then `packed` holds 16-bit elements).
struct PackedLinear {
  AlignedBuffer packed;
  kernels::WeightType type = kernels::WeightType::kF32;
  /// compute_dtype bf16: `dot` = packed with gemm_dot_pack_b and run by gemm_bf16_dot
  /// (vdpbf16ps); else `round_a` = the bf16 panels of gemm_pack_b16 run by gemm with A rounded.
  bool dot = false;
  bool round_a = false;
  std::vector<float> bias;  ///< [n] or empty
  std::size_t n = 0;
  std::size_t k = 0;
};

/// How a projection multiplies: the weight type, and compute_dtype bf16's two kernels.
struct LinearKind {
  kernels::WeightType type = kernels::WeightType::kF32;
  bool dot = false;      ///< vdpbf16ps (type kBf16)
  bool round_a = false;  ///< f32 FMAs on activations rounded to bf16 (type kBf16)
};

/// The kind of projection `options` asks for on `isa` (validated options).
LinearKind linear_kind(kernels::Isa isa, const RunOptions& options) noexcept;

/// Packs the rows of `parts` (each [rows_i, k], nn.Linear layout, named by `names`) stacked
/// into one projection of element type `type`, with the `biases` (each [rows_i], kept in f32)
/// concatenated (none: no bias). A part may be float32 or 16-bit (Tensor::dtype). bf16/f16:
/// parts already of `type` are packed as their bits (a single such part with no copy at
/// all); the others are rounded to nearest even (16-bit ones widened first, exactly), and a
/// finite weight that rounds past the type's range fails with kInvalidArgument naming the
/// tensor, the element and its value (lin is then left as it was). f32: 16-bit parts are
/// widened (exactly), so the panels equal those of a float32 load of the same values.
Status pack_linear(kernels::Isa isa, LinearKind kind, std::initializer_list<const Tensor*> parts,
                   std::initializer_list<const Tensor*> biases, PackedLinear& lin,
                   std::initializer_list<const char*> names);

/// Returns the kernels' weight type of a RunOptions weight_dtype (kF32, kBf16, kF16).
kernels::WeightType weight_type_of(DType dtype) noexcept;
/// Returns the kernels' cache element type of a RunOptions kv_dtype.
kernels::KvType kv_type_of(DType dtype) noexcept;

/// C[m, n] = A[m, k] · Wᵀ + b over the engine's scheduler, split into output tiles; each
/// task uses its worker's scratch in ws.
void run_linear(const EngineState& st, const Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc);

}  // namespace attn::detail
