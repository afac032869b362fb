// Packing and running the engine's projections (see projection.hpp).
#include "projection.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "engine_state.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"

namespace attn::detail {

kernels::KvType kv_type_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::kBf16:
      return kernels::KvType::kBf16;
    case DType::kF16:
      return kernels::KvType::kF16;
    case DType::kInt8:
      return kernels::KvType::kInt8;
    default:
      return kernels::KvType::kF32;
  }
}

kernels::WeightType weight_type_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::kBf16:
      return kernels::WeightType::kBf16;
    case DType::kF16:
      return kernels::WeightType::kF16;
    default:
      return kernels::WeightType::kF32;
  }
}

LinearKind linear_kind(kernels::Isa isa, const RunOptions& options) noexcept {
  LinearKind kind;
  kind.type = weight_type_of(options.weight_dtype);
  if (options.compute_dtype == DType::kBf16) {
    kind.dot = isa == kernels::Isa::kAvx512 && kernels::bf16_dot_supported();
    kind.round_a = !kind.dot;
  }
  return kind;
}

namespace {

const char* weight_type_name(kernels::WeightType type) noexcept {
  return type == kernels::WeightType::kBf16 ? "bf16" : "f16";
}

// The stacked f32 weights rounded to `type` (nearest even); the first finite value that
// rounds past the type's range is an error naming its tensor, row, column and value.
Status narrow_weights(const std::vector<float>& stacked, kernels::WeightType type,
                      std::initializer_list<const Tensor*> parts,
                      std::initializer_list<const char*> names, std::size_t k,
                      std::vector<std::uint16_t>& out) {
  out.resize(stacked.size());
  for (std::size_t i = 0; i < stacked.size(); ++i) {
    const kernels::Narrowed h = kernels::narrow16(stacked[i], type);
    if (h.overflow) {
      std::size_t row = i / k, part = 0;
      for (const Tensor* p : parts) {
        const auto rows = static_cast<std::size_t>(p->shape()[0]);
        if (row < rows) break;
        row -= rows;
        ++part;
      }
      std::ostringstream msg;
      msg.precision(9);
      msg << "weight " << (part < names.size() ? names.begin()[part] : "?") << "[" << row << ", "
          << i % k << "] = " << stacked[i] << " is beyond the range of weight_dtype "
          << weight_type_name(type) << " (largest finite "
          << (type == kernels::WeightType::kF16 ? "65504" : "3.38953139e+38")
          << "); use weight_dtype f32" << (type == kernels::WeightType::kF16 ? " or bf16" : "");
      return {ErrorCode::kInvalidArgument, msg.str()};
    }
    out[i] = h.bits;
  }
  return {};
}

}  // namespace

Status pack_linear(kernels::Isa isa, LinearKind kind, std::initializer_list<const Tensor*> parts,
                   std::initializer_list<const Tensor*> biases, PackedLinear& lin,
                   std::initializer_list<const char*> names) {
  std::size_t n = 0;
  const std::size_t k = static_cast<std::size_t>((*parts.begin())->shape()[1]);
  for (const Tensor* p : parts) n += static_cast<std::size_t>(p->shape()[0]);
  const kernels::WeightType type = kind.type;
  const std::size_t elems =
      kind.dot ? kernels::gemm_dot_packed_elems(n, k) : kernels::gemm_packed_floats(isa, n, k);
  const bool narrow = type != kernels::WeightType::kF32;
  const std::size_t elem_bytes = narrow ? 2 : sizeof(float);
  PackedLinear out;
  out.type = type;
  out.dot = kind.dot;
  out.round_a = kind.round_a;
  // The buffer counts floats: 16-bit panels take half as many.
  const std::size_t floats = narrow ? elems / 2 + elems % 2 : elems;
  if (!out.packed.reserve(floats))
    return out_of_memory("packed weights", mul_or_max(elems, elem_bytes));
  try {
    std::vector<float> stacked;
    stacked.reserve(n * k);
    for (const Tensor* p : parts)
      stacked.insert(stacked.end(), p->values().begin(), p->values().end());
    if (narrow) {
      std::vector<std::uint16_t> halves;
      if (Status s = narrow_weights(stacked, type, parts, names, k, halves); !s.ok()) return s;
      auto* packed = reinterpret_cast<std::uint16_t*>(out.packed.data());
      if (kind.dot) {
        kernels::gemm_dot_pack_b(halves.data(), static_cast<std::ptrdiff_t>(k), 1, n, k, packed);
      } else {
        kernels::gemm_pack_b16(isa, halves.data(), static_cast<std::ptrdiff_t>(k), 1, n, k, packed);
      }
    } else {
      kernels::gemm_pack_b(isa, stacked.data(), static_cast<std::ptrdiff_t>(k), 1, n, k,
                           out.packed.data());
    }
    for (const Tensor* b : biases)
      out.bias.insert(out.bias.end(), b->values().begin(), b->values().end());
  } catch (const std::bad_alloc&) {
    return out_of_memory("the weights being packed", mul_or_max(n * k, sizeof(float)));
  }
  out.n = n;
  out.k = k;
  lin = std::move(out);
  return {};
}

void run_linear(const EngineState& st, const Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc) {
  const kernels::GemmBlock block =
      lin.dot ? kernels::gemm_dot_task_block() : kernels::gemm_task_block(st.isa);
  const std::size_t m_tiles = (m + block.m - 1) / block.m;
  const std::size_t n_tiles = (lin.n + block.n - 1) / block.n;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t mi = t / n_tiles, ni = t % n_tiles;
      kernels::GemmArgs g;
      g.a = a + static_cast<std::ptrdiff_t>(mi * block.m) * lda;
      g.lda = lda;
      g.b_type = lin.type;
      if (lin.type == kernels::WeightType::kF32) {
        g.packed_b = lin.packed.data();
      } else {
        g.packed_b16 = reinterpret_cast<const std::uint16_t*>(lin.packed.data());
      }
      g.n_total = lin.n;
      g.m = std::min(block.m, m - mi * block.m);
      g.k = lin.k;
      g.n0 = ni * block.n;
      g.n = std::min(block.n, lin.n - g.n0);
      g.bias = lin.bias.empty() ? nullptr : lin.bias.data();
      g.c = c + static_cast<std::ptrdiff_t>(mi * block.m) * ldc;
      g.ldc = ldc;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      g.round_a_bf16 = lin.round_a;
      if (lin.dot) {
        kernels::gemm_bf16_dot(g);
      } else {
        kernels::gemm(st.isa, g);
      }
    }
  };
  st.scheduler->parallel_for(m_tiles * n_tiles, 1, body);
}

}  // namespace attn::detail
