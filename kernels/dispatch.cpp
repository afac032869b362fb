// Run-time selection of the instruction set (xsimd::dispatch) and the kernel entry points.
// Compiled without ISA flags: it only picks which per-ISA table to call.
#include <cpuid.h>

#include <algorithm>
#include <cassert>  // xsimd 8.1's xsimd_arch.hpp uses assert without including it
#include <type_traits>

#include <xsimd/config/xsimd_arch.hpp>

#include "kernels/isa.hpp"
#include "kernels/kernels.hpp"
#include "kernels/table.hpp"

namespace attn::kernels {
namespace {

// Best first, as xsimd::dispatch requires.
using CompiledArchs = xsimd::arch_list<
#if ATTN_HAVE_AVX512
    xsimd::avx512bw,
#endif
    xsimd::fma3<xsimd::avx2>, xsimd::sse2>;

template <class Arch>
constexpr Isa isa_of() noexcept {
  if constexpr (std::is_same_v<Arch, xsimd::sse2>) {
    return Isa::kSse2;
  } else if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>) {
    return Isa::kAvx2;
  } else {
    return Isa::kAvx512;
  }
}

struct IsaOfArch {
  template <class Arch>
  Isa operator()(Arch) const noexcept {
    return isa_of<Arch>();
  }
};

// The OS must also save the wider registers; GCC's cpu model checks XCR0 for that, which
// xsimd 8.1's cpuid does not.
// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() noexcept {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & bit_F16C) != 0;
}

bool os_and_cpu_support(Isa isa) noexcept {
  switch (isa) {
    case Isa::kSse2:
      return true;
    case Isa::kAvx2:
      // F16C: the avx2 kernels widen binary16 weights with vcvtph2ps (every AVX2 CPU has it).
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
}

}  // namespace

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::kSse2:
      return "sse2";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool isa_compiled(Isa isa) noexcept {
  bool found = false;
  CompiledArchs::for_each([&](auto arch) { found = found || isa_of<decltype(arch)>() == isa; });
  return found;
}

bool isa_supported(Isa isa) noexcept {
  if (!isa_compiled(isa) || !os_and_cpu_support(isa)) return false;
  const unsigned best = xsimd::available_architectures().best;
  unsigned version = 0;
  CompiledArchs::for_each([&](auto arch) {
    if (isa_of<decltype(arch)>() == isa) version = decltype(arch)::version();
  });
  return version <= best;
}

Isa best_isa() noexcept {
  static const Isa best = [] {
    Isa isa = xsimd::dispatch<CompiledArchs>(IsaOfArch{})();
    // xsimd trusts cpuid alone; step down if the OS does not enable the registers.
    for (Isa lower : kAllIsas) {
      if (lower <= isa && os_and_cpu_support(lower)) return lower;
    }
    return Isa::kSse2;
  }();
  return best;
}

const KernelTable& table(Isa isa) noexcept {
  switch (isa) {
#if ATTN_HAVE_AVX512
    case Isa::kAvx512:
      return table_avx512();
#endif
    case Isa::kAvx2:
      return table_avx2();
    default:
      return table_sse2();
  }
}

std::size_t gemm_packed_floats(Isa isa, std::size_t n, std::size_t k) noexcept {
  return table(isa).gemm_packed_floats(n, k);
}
void gemm_pack_b(Isa isa, const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                 std::size_t k, float* packed) noexcept {
  table(isa).gemm_pack_b(b, rs_n, rs_k, n, k, packed);
}
void gemm_pack_b16(Isa isa, const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                   std::size_t n, std::size_t k, std::uint16_t* packed) noexcept {
  table(isa).gemm_pack_b16(b, rs_n, rs_k, n, k, packed);
}
std::size_t gemm_n_step(Isa isa) noexcept { return table(isa).gemm_n_step(); }
std::size_t gemm_scratch_floats(Isa isa) noexcept { return table(isa).gemm_scratch_floats(); }
GemmBlock gemm_task_block(Isa isa) noexcept { return table(isa).gemm_task_block(); }
void gemm(Isa isa, const GemmArgs& args) noexcept { table(isa).gemm(args); }

std::size_t flash_attention_q_block(Isa isa, std::size_t head_dim) noexcept {
  return table(isa).flash_attention_q_block(head_dim);
}
std::size_t flash_attention_scratch_floats(Isa isa, std::size_t head_dim) noexcept {
  return table(isa).flash_attention_scratch_floats(head_dim);
}
void flash_attention(Isa isa, const AttentionArgs& args) noexcept {
  table(isa).flash_attention(args);
}

std::size_t flash_attention_block_count(Isa isa, std::size_t seq_len_q, std::size_t head_dim,
                                        std::size_t rows_per_block) noexcept {
  const std::size_t rows =
      rows_per_block > 0 ? rows_per_block : flash_attention_q_block(isa, head_dim);
  return (seq_len_q + rows - 1) / rows;
}

void flash_attention_blocks(Isa isa, AttentionArgs args, std::size_t block_begin,
                            std::size_t block_end, std::size_t rows_per_block) noexcept {
  const std::size_t rows =
      rows_per_block > 0 ? rows_per_block : flash_attention_q_block(isa, args.head_dim);
  const KernelTable& t = table(isa);
  for (std::size_t b = block_begin; b < block_end; ++b) {
    args.q_begin = b * rows;
    args.q_end = std::min(args.seq_len_q, args.q_begin + rows);
    if (args.q_begin >= args.q_end) break;
    t.flash_attention(args);
  }
}

void decode_chunk(Isa isa, const float* q, const float* k, std::ptrdiff_t ld_k, const float* v,
                  std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale,
                  float* out_partial, DecodePartial* partial, const DecodeMods& mods) noexcept {
  table(isa).decode_chunk(q, k, ld_k, v, ld_v, n_kv, head_dim, scale, out_partial, partial, mods);
}
void decode_chunk_group(Isa isa, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                        const float* k, std::ptrdiff_t ld_k, const float* v, std::ptrdiff_t ld_v,
                        std::size_t n_kv, std::size_t head_dim, float scale, float* out_partials,
                        std::ptrdiff_t ld_out, DecodePartial* partials, std::ptrdiff_t ld_partial,
                        const DecodeMods* mods) noexcept {
  table(isa).decode_chunk_group(q, ld_q, rows, k, ld_k, v, ld_v, n_kv, head_dim, scale,
                                out_partials, ld_out, partials, ld_partial, mods);
}
void decode_chunk_paged(Isa isa, const float* q, const KvPages& pages, std::size_t first_key,
                        std::size_t n_kv, std::size_t head_dim, float scale, float* out_partial,
                        DecodePartial* partial, const DecodeMods& mods) noexcept {
  table(isa).decode_chunk_paged(q, pages, first_key, n_kv, head_dim, scale, out_partial, partial,
                                mods);
}
void decode_chunk_group_paged(Isa isa, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                              const KvPages& pages, std::size_t first_key, std::size_t n_kv,
                              std::size_t head_dim, float scale, float* out_partials,
                              std::ptrdiff_t ld_out, DecodePartial* partials,
                              std::ptrdiff_t ld_partial, const DecodeMods* mods) noexcept {
  table(isa).decode_chunk_group_paged(q, ld_q, rows, pages, first_key, n_kv, head_dim, scale,
                                      out_partials, ld_out, partials, ld_partial, mods);
}
void decode_merge(Isa isa, const float* out_partials, const DecodePartial* partials,
                  std::size_t n_chunks, std::size_t head_dim, float* out) noexcept {
  table(isa).decode_merge(out_partials, partials, n_chunks, head_dim, out);
}

void masked_softmax_rows(Isa isa, float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols,
                         float scale, bool causal, std::ptrdiff_t visible_offset,
                         std::size_t window, float softcap, float alibi_slope) noexcept {
  table(isa).masked_softmax_rows(s, ld, rows, cols, scale, causal, visible_offset, window, softcap,
                                 alibi_slope);
}

void vector_exp(Isa isa, const float* x, float* y, std::size_t n) noexcept {
  table(isa).vector_exp(x, y, n);
}

double peak_fma(Isa isa, std::size_t iterations) noexcept {
  return table(isa).peak_fma(iterations);
}
#if ATTN_HAVE_AVX512BF16
namespace detail {
double peak_bf16_avx512(std::size_t iterations) noexcept;  // arch/probe_avx512bf16.cpp
}  // namespace detail
#endif

bool f16c_supported() noexcept { return cpu_has_f16c(); }

bool bf16_dot_supported() noexcept {
#if ATTN_HAVE_AVX512BF16
  return os_and_cpu_support(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

double peak_bf16(std::size_t iterations) noexcept {
#if ATTN_HAVE_AVX512BF16
  if (bf16_dot_supported()) return detail::peak_bf16_avx512(iterations);
#endif
  static_cast<void>(iterations);
  return 0;
}

float read_sum(Isa isa, const float* data, std::size_t n) noexcept {
  return table(isa).read_sum(data, n);
}

}  // namespace attn::kernels
