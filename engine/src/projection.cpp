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

// Writes part `p` ([rows, k], any dtype) as `type` to out: bits already of `type` are copied;
// float32 values and the other 16-bit type (widened, exactly) are rounded to nearest even,
// and the first finite value that rounds past the type's range is an error naming the tensor,
// row, column and value.
Status narrow_part(const Tensor& p, kernels::WeightType type, const char* name, std::size_t k,
                   std::uint16_t* out) {
  const auto count = static_cast<std::size_t>(p.numel());
  if (p.dtype() != DType::kF32 && weight_type_of(p.dtype()) == type) {
    std::copy_n(p.bits().data(), count, out);
    return {};
  }
  const kernels::WeightType from = weight_type_of(p.dtype());
  for (std::size_t i = 0; i < count; ++i) {
    const float x = p.dtype() == DType::kF32 ? p.data()[i] : kernels::widen16(p.bits()[i], from);
    const kernels::Narrowed h = kernels::narrow16(x, type);
    if (h.overflow) {
      std::ostringstream msg;
      msg.precision(9);
      msg << "weight " << name << "[" << i / k << ", " << i % k << "] = " << x
          << " is beyond the range of weight_dtype " << weight_type_name(type)
          << " (largest finite " << (type == kernels::WeightType::kF16 ? "65504" : "3.38953139e+38")
          << "); use weight_dtype f32" << (type == kernels::WeightType::kF16 ? " or bf16" : "");
      return {ErrorCode::kInvalidArgument, msg.str()};
    }
    out[i] = h.bits;
  }
  return {};
}

// Writes part `p` as float32 values to out (16-bit elements widened, exactly).
void widen_part(const Tensor& p, float* out) {
  if (p.dtype() == DType::kF32) {
    std::copy(p.values().begin(), p.values().end(), out);
    return;
  }
  const kernels::WeightType from = weight_type_of(p.dtype());
  for (std::size_t i = 0; i < p.bits().size(); ++i) out[i] = kernels::widen16(p.bits()[i], from);
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
    // The parts are stacked by rows in the packed type: 16-bit weights of that type are
    // copied as they are (no float32 copy); the rest is rounded or widened.
    const Tensor& first = **parts.begin();
    auto* packed16 = reinterpret_cast<std::uint16_t*>(out.packed.data());
    auto pack16 = [&](const std::uint16_t* halves) {
      if (kind.dot) {
        kernels::gemm_dot_pack_b(halves, static_cast<std::ptrdiff_t>(k), 1, n, k, packed16);
      } else {
        kernels::gemm_pack_b16(isa, halves, static_cast<std::ptrdiff_t>(k), 1, n, k, packed16);
      }
    };
    if (narrow && parts.size() == 1 && first.dtype() != DType::kF32 &&
        weight_type_of(first.dtype()) == type) {
      pack16(first.bits().data());
    } else if (narrow) {
      std::vector<std::uint16_t> stacked(n * k);
      std::size_t at = 0, i = 0;
      for (const Tensor* p : parts) {
        const char* name = i < names.size() ? names.begin()[i] : "?";
        if (Status s = narrow_part(*p, type, name, k, stacked.data() + at); !s.ok()) return s;
        at += static_cast<std::size_t>(p->numel());
        ++i;
      }
      pack16(stacked.data());
    } else {
      std::vector<float> stacked(n * k);
      std::size_t at = 0;
      for (const Tensor* p : parts) {
        widen_part(*p, stacked.data() + at);
        at += static_cast<std::size_t>(p->numel());
      }
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
