// The kernels compiled for AVX-512 F/CD/DQ/BW (see kernels/CMakeLists.txt).
#include "kernels/impl/make_table.hpp"

namespace attn::kernels {
const KernelTable& table_avx512() noexcept { return make_table<xsimd::avx512bw>(Isa::kAvx512); }
}  // namespace attn::kernels
