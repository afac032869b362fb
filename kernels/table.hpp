// The per-instruction-set kernel table: one instance per ISA, filled in kernels/arch/.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.hpp"

namespace attn::kernels {

struct KernelTable {
  Isa isa;
  std::size_t (*gemm_packed_floats)(std::size_t n, std::size_t k) noexcept;
  void (*gemm_pack_b)(const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                      std::size_t k, float* packed) noexcept;
  void (*gemm_pack_b16)(const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                        std::size_t n, std::size_t k, std::uint16_t* packed) noexcept;
  std::size_t (*gemm_n_step)() noexcept;
  std::size_t (*gemm_scratch_floats)() noexcept;
  GemmBlock (*gemm_task_block)() noexcept;
  void (*gemm)(const GemmArgs& args) noexcept;
  std::size_t (*flash_attention_q_block)(std::size_t head_dim) noexcept;
  std::size_t (*flash_attention_scratch_floats)(std::size_t head_dim) noexcept;
  void (*flash_attention)(const AttentionArgs& args) noexcept;
  void (*decode_chunk)(const float* q, const float* k, std::ptrdiff_t ld_k, const float* v,
                       std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale,
                       float* out_partial, DecodePartial* partial, const DecodeMods& mods) noexcept;
  void (*decode_chunk_group)(const float* q, std::ptrdiff_t ld_q, std::size_t rows, const float* k,
                             std::ptrdiff_t ld_k, const float* v, std::ptrdiff_t ld_v,
                             std::size_t n_kv, std::size_t head_dim, float scale, float* out,
                             std::ptrdiff_t ld_out, DecodePartial* partials,
                             std::ptrdiff_t ld_partial, const DecodeMods* mods) noexcept;
  void (*decode_chunk_paged)(const float* q, const KvPages& pages, std::size_t first_key,
                             std::size_t n_kv, std::size_t head_dim, float scale,
                             float* out_partial, DecodePartial* partial,
                             const DecodeMods& mods) noexcept;
  void (*decode_chunk_group_paged)(const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                                   const KvPages& pages, std::size_t first_key, std::size_t n_kv,
                                   std::size_t head_dim, float scale, float* out,
                                   std::ptrdiff_t ld_out, DecodePartial* partials,
                                   std::ptrdiff_t ld_partial, const DecodeMods* mods) noexcept;
  void (*decode_merge)(const float* out_partials, const DecodePartial* partials,
                       std::size_t n_chunks, std::size_t head_dim, float* out) noexcept;
  void (*masked_softmax_rows)(float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols,
                              float scale, bool causal, std::ptrdiff_t visible_offset,
                              std::size_t window, float softcap, float alibi_slope) noexcept;
  void (*vector_exp)(const float* x, float* y, std::size_t n) noexcept;
  double (*peak_fma)(std::size_t iterations) noexcept;
  float (*read_sum)(const float* data, std::size_t n) noexcept;
};

// Defined in kernels/arch/table_<isa>.cpp, each compiled with its ISA's flags.
const KernelTable& table_sse2() noexcept;
const KernelTable& table_avx2() noexcept;
const KernelTable& table_avx512() noexcept;  // only when ATTN_HAVE_AVX512

/// Returns the table of `isa`. Precondition: isa_compiled(isa).
const KernelTable& table(Isa isa) noexcept;

}  // namespace attn::kernels
