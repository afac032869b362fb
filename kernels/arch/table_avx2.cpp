// The kernels compiled for AVX2 + FMA (built with -mavx2 -mfma, see kernels/CMakeLists.txt).
#include "kernels/impl/make_table.hpp"

namespace attn::kernels {
const KernelTable& table_avx2() noexcept {
  return make_table<xsimd::fma3<xsimd::avx2>>(Isa::kAvx2);
}
}  // namespace attn::kernels
