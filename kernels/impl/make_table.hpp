// Builds the kernel table of one architecture from the kernel functors. Included only by
// kernels/arch/table_<isa>.cpp, compiled with that ISA's flags.
#pragma once

#include "kernels/impl/attention.hpp"
#include "kernels/impl/decode.hpp"
#include "kernels/impl/gemm.hpp"
#include "kernels/impl/machine.hpp"
#include "kernels/impl/softmax.hpp"
#include "kernels/table.hpp"

namespace attn::kernels {

template <class Arch>
const KernelTable& make_table(Isa isa) noexcept {
  static const KernelTable table{
      isa,
      [](std::size_t n, std::size_t k) noexcept { return GemmPackB::packed_floats(Arch{}, n, k); },
      [](const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n, std::size_t k,
         float* packed) noexcept { GemmPackB{}(Arch{}, b, rs_n, rs_k, n, k, packed); },
      [](const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
         std::size_t k,
         std::uint16_t* packed) noexcept { GemmPackB{}(Arch{}, b, rs_n, rs_k, n, k, packed); },
      []() noexcept { return Gemm::n_step(Arch{}); },
      []() noexcept { return Gemm::scratch_floats(Arch{}); },
      []() noexcept { return Gemm::task_block(Arch{}); },
      [](const GemmArgs& args) noexcept { Gemm{}(Arch{}, args); },
      [](std::size_t head_dim) noexcept { return FlashAttention::q_block(Arch{}, head_dim); },
      [](std::size_t head_dim) noexcept {
        return FlashAttention::scratch_floats(Arch{}, head_dim);
      },
      [](const AttentionArgs& args) noexcept { FlashAttention{}(Arch{}, args); },
      [](const float* q, const float* k, std::ptrdiff_t ld_k, const float* v, std::ptrdiff_t ld_v,
         std::size_t n_kv, std::size_t head_dim, float scale, float* out_partial,
         DecodePartial* partial, const DecodeMods& mods) noexcept {
        DecodeChunk{}(Arch{}, q, k, ld_k, v, ld_v, n_kv, head_dim, scale, out_partial, partial,
                      mods);
      },
      [](const float* q, std::ptrdiff_t ld_q, std::size_t rows, const float* k, std::ptrdiff_t ld_k,
         const float* v, std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale,
         float* out, std::ptrdiff_t ld_out, DecodePartial* partials, std::ptrdiff_t ld_partial,
         const DecodeMods* mods) noexcept {
        DecodeChunkGroup{}(Arch{}, q, ld_q, rows, k, ld_k, v, ld_v, n_kv, head_dim, scale, out,
                           ld_out, partials, ld_partial, mods);
      },
      [](const float* q, const KvPages& pages, std::size_t first_key, std::size_t n_kv,
         std::size_t head_dim, float scale, float* out_partial, DecodePartial* partial,
         const DecodeMods& mods) noexcept {
        DecodeChunk::paged(Arch{}, q, pages, first_key, n_kv, head_dim, scale, out_partial, partial,
                           mods);
      },
      [](const float* q, std::ptrdiff_t ld_q, std::size_t rows, const KvPages& pages,
         std::size_t first_key, std::size_t n_kv, std::size_t head_dim, float scale, float* out,
         std::ptrdiff_t ld_out, DecodePartial* partials, std::ptrdiff_t ld_partial,
         const DecodeMods* mods) noexcept {
        DecodeChunk::group_paged(Arch{}, q, ld_q, rows, pages, first_key, n_kv, head_dim, scale,
                                 out, ld_out, partials, ld_partial, mods);
      },
      [](const float* out_partials, const DecodePartial* partials, std::size_t n_chunks,
         std::size_t head_dim, float* out) noexcept {
        DecodeMerge{}(Arch{}, out_partials, partials, n_chunks, head_dim, out);
      },
      [](float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols, float scale, bool causal,
         std::ptrdiff_t visible_offset, std::size_t window, float softcap,
         float alibi_slope) noexcept {
        MaskedSoftmaxRows{}(Arch{}, s, ld, rows, cols, scale, causal, visible_offset, window,
                            softcap, alibi_slope);
      },
      [](const float* x, float* y, std::size_t n) noexcept { VectorExp{}(Arch{}, x, y, n); },
      [](std::size_t iterations) noexcept { return PeakFma{}(Arch{}, iterations); },
      [](const float* data, std::size_t n) noexcept { return ReadSum{}(Arch{}, data, n); },
  };
  return table;
}

}  // namespace attn::kernels
