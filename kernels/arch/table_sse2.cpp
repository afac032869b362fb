// The kernels compiled for SSE2 (baseline x86-64).
#include "kernels/impl/make_table.hpp"

namespace attn::kernels {
const KernelTable& table_sse2() noexcept { return make_table<xsimd::sse2>(Isa::kSse2); }
}  // namespace attn::kernels
