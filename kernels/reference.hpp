// Float64 reference twins of the kernels: the plain loops the fast kernels are tested
// against. Same arguments as the kernels, results in double.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.hpp"
#include "kernels/visibility.hpp"

namespace attn::kernels::reference {

/// True when query row i may see key j (see kernels/visibility.hpp for the rule).
inline bool visible(std::size_t i, std::size_t j, std::size_t seq_len_q, std::size_t seq_len_kv,
                    bool causal, std::size_t window) noexcept {
  return visible_keys(i, seq_len_q, seq_len_kv, causal, window).contains(j);
}

/// c[i, j] = sum_p a[i, p] * b(j, p) + bias[j], with b(j, p) = b[j * rs_n + p * rs_k].
void gemm(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k, const float* b,
          std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n, const float* bias, double* c,
          std::ptrdiff_t ldc);

/// The same with 16-bit weights b (bfloat16 or binary16 bits, type `type`), each widened
/// exactly to double: the twin of gemm with GemmArgs::b_type kBf16 / kF16.
void gemm_w16(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k,
              const std::uint16_t* b, WeightType type, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
              std::size_t n, const float* bias, double* c, std::ptrdiff_t ldc);

/// The twin of gemm_bf16_dot (and of gemm with round_a_bf16 and bf16 weights): each a[i, p]
/// rounded to bfloat16 (nearest even), b bf16 bits, both widened exactly to double.
void gemm_bf16_dot(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k,
                   const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                   const float* bias, double* c, std::ptrdiff_t ldc);

/// Rows q_begin .. q_end - 1 of the attention `args` describes (args.out and args.scratch
/// are ignored); row i goes to out + (i - q_begin) * ld_out.
void attention(const AttentionArgs& args, double* out, std::ptrdiff_t ld_out);

/// Applies the score modifiers (kernels.hpp) to a scaled score s: soft-capping, then the ALiBi
/// bias for a key `rel` positions from its query.
double modify_score(double s, float softcap, float alibi_slope, double rel);

/// One query against n_kv keys, no mask: [head_dim] to out. mods.key_offset: position of
/// key 0 minus the query's.
void decode(const float* q, const float* k, std::ptrdiff_t ld_k, const float* v,
            std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale, double* out,
            const DecodeMods& mods = {});

/// decode() over keys [first_key, first_key + n_kv) of a paged cache (kernels.hpp).
void decode_paged(const float* q, const KvPages& pages, std::size_t first_key, std::size_t n_kv,
                  std::size_t head_dim, float scale, double* out, const DecodeMods& mods = {});

/// The masked softmax of masked_softmax_rows, from s to out (ld_out).
void masked_softmax_rows(const float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols,
                         float scale, bool causal, std::ptrdiff_t visible_offset,
                         std::size_t window, double* out, std::ptrdiff_t ld_out, float softcap = 0,
                         float alibi_slope = 0);

}  // namespace attn::kernels::reference
