// Packing and running the engine's projections (see projection.hpp).
#include "projection.hpp"

#include <algorithm>

#include "engine_state.hpp"
#include "kernels/kernels.hpp"

namespace attn::detail {

Status pack_linear(kernels::Isa isa, std::initializer_list<const Tensor*> parts,
                   std::initializer_list<const Tensor*> biases, PackedLinear& lin) {
  std::size_t n = 0;
  const std::size_t k = static_cast<std::size_t>((*parts.begin())->shape()[1]);
  for (const Tensor* p : parts) n += static_cast<std::size_t>(p->shape()[0]);
  const std::size_t floats = kernels::gemm_packed_floats(isa, n, k);
  if (!lin.packed.reserve(floats))
    return out_of_memory("packed weights", mul_or_max(floats, sizeof(float)));
  try {
    std::vector<float> stacked;
    stacked.reserve(n * k);
    for (const Tensor* p : parts)
      stacked.insert(stacked.end(), p->values().begin(), p->values().end());
    kernels::gemm_pack_b(isa, stacked.data(), static_cast<std::ptrdiff_t>(k), 1, n, k,
                         lin.packed.data());
    for (const Tensor* b : biases)
      lin.bias.insert(lin.bias.end(), b->values().begin(), b->values().end());
  } catch (const std::bad_alloc&) {
    return out_of_memory("the weights being packed", mul_or_max(n * k, sizeof(float)));
  }
  lin.n = n;
  lin.k = k;
  return {};
}

void run_linear(const EngineState& st, const Workspace& ws, const PackedLinear& lin, const float* a,
                std::ptrdiff_t lda, std::size_t m, float* c, std::ptrdiff_t ldc) {
  const kernels::GemmBlock block = kernels::gemm_task_block(st.isa);
  const std::size_t m_tiles = (m + block.m - 1) / block.m;
  const std::size_t n_tiles = (lin.n + block.n - 1) / block.n;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t mi = t / n_tiles, ni = t % n_tiles;
      kernels::GemmArgs g;
      g.a = a + static_cast<std::ptrdiff_t>(mi * block.m) * lda;
      g.lda = lda;
      g.packed_b = lin.packed.data();
      g.n_total = lin.n;
      g.m = std::min(block.m, m - mi * block.m);
      g.k = lin.k;
      g.n0 = ni * block.n;
      g.n = std::min(block.n, lin.n - g.n0);
      g.bias = lin.bias.empty() ? nullptr : lin.bias.data();
      g.c = c + static_cast<std::ptrdiff_t>(mi * block.m) * ldc;
      g.ldc = ldc;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      kernels::gemm(st.isa, g);
    }
  };
  st.scheduler->parallel_for(m_tiles * n_tiles, 1, body);
}

}  // namespace attn::detail
