// Float64 reference twins of the kernels (see reference.hpp).
#include "kernels/reference.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/half.hpp"

namespace attn::kernels::reference {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Element d of the row of position p at `offset` of a paged cache, widened exactly (int8:
// times its scale, in double).
double page_value(const KvPages& pg, std::size_t p, std::ptrdiff_t offset,
                  std::ptrdiff_t scale_offset, std::size_t d) {
  switch (pg.type) {
    case KvType::kF32:
      return page_row<float>(pg, p, offset)[d];
    case KvType::kBf16:
      return bf16_to_f32(page_row<std::uint16_t>(pg, p, offset)[d]);
    case KvType::kF16:
      return f16_to_f32(page_row<std::uint16_t>(pg, p, offset)[d]);
    case KvType::kInt8:
      return static_cast<double>(page_scale(pg, p, scale_offset)) *
             static_cast<double>(page_row<std::int8_t>(pg, p, offset)[d]);
  }
  return 0;
}
double page_key(const KvPages& pg, std::size_t p, std::size_t d) {
  return page_value(pg, p, pg.k_offset, pg.k_scale_offset, d);
}
double page_val(const KvPages& pg, std::size_t p, std::size_t d) {
  return page_value(pg, p, pg.v_offset, pg.v_scale_offset, d);
}

// Softmax of one row of scores in place; masked entries are -inf; all masked gives 0.
void softmax_in_place(std::vector<double>& s) {
  double mx = kNegInf;
  bool any_nan = false;
  for (double x : s) {
    if (std::isnan(x)) any_nan = true;
    if (x > mx) mx = x;
  }
  if (any_nan) {
    for (double& x : s) x = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  if (mx == kNegInf) {
    for (double& x : s) x = 0.0;
    return;
  }
  double sum = 0.0;
  for (double& x : s) {
    x = std::exp(x - mx);  // exp(-inf) = 0 for masked entries; +inf - +inf gives NaN
    sum += x;
  }
  for (double& x : s) x /= sum;
}

template <class E>
void decode_rows(const float* q, const E* k, std::ptrdiff_t ld_k, const E* v, std::ptrdiff_t ld_v,
                 std::size_t n_kv, std::size_t head_dim, float scale, double* out,
                 const DecodeMods& mods) {
  // As attention() with one query row at position n_kv - 1, the keys shifted so that key j
  // sits mods.key_offset + j positions from the query.
  std::vector<double> s(n_kv);
  for (std::size_t j = 0; j < n_kv; ++j) {
    double acc = 0.0;
    for (std::size_t d = 0; d < head_dim; ++d)
      acc += static_cast<double>(q[d]) * static_cast<double>(k[j * ld_k + d]);
    s[j] = modify_score(acc * static_cast<double>(scale), mods.softcap, mods.alibi_slope,
                        static_cast<double>(mods.key_offset + static_cast<std::int64_t>(j)));
  }
  softmax_in_place(s);
  for (std::size_t d = 0; d < head_dim; ++d) out[d] = 0.0;
  for (std::size_t j = 0; j < n_kv; ++j)
    for (std::size_t d = 0; d < head_dim; ++d)
      out[d] += s[j] * static_cast<double>(v[j * ld_v + d]);
}

}  // namespace

void gemm(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k, const float* b,
          std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n, const float* bias, double* c,
          std::ptrdiff_t ldc) {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      double acc = bias ? static_cast<double>(bias[j]) : 0.0;
      for (std::size_t p = 0; p < k; ++p) {
        acc +=
            static_cast<double>(a[i * lda + p]) *
            static_cast<double>(
                b[static_cast<std::ptrdiff_t>(j) * rs_n + static_cast<std::ptrdiff_t>(p) * rs_k]);
      }
      c[i * ldc + j] = acc;
    }
  }
}

void gemm_w16(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k,
              const std::uint16_t* b, WeightType type, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
              std::size_t n, const float* bias, double* c, std::ptrdiff_t ldc) {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      double acc = bias ? static_cast<double>(bias[j]) : 0.0;
      for (std::size_t p = 0; p < k; ++p) {
        const std::uint16_t h =
            b[static_cast<std::ptrdiff_t>(j) * rs_n + static_cast<std::ptrdiff_t>(p) * rs_k];
        acc += static_cast<double>(a[i * lda + p]) * static_cast<double>(widen16(h, type));
      }
      c[i * ldc + j] = acc;
    }
  }
}

void gemm_bf16_dot(const float* a, std::ptrdiff_t lda, std::size_t m, std::size_t k,
                   const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                   const float* bias, double* c, std::ptrdiff_t ldc) {
  std::vector<float> a_bf16(m * k);  // A rounded to bf16, then gemm_w16's float64 sums
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t p = 0; p < k; ++p)
      a_bf16[i * k + p] = bf16_to_f32(f32_to_bf16(a[i * lda + p]).bits);
  }
  gemm_w16(a_bf16.data(), static_cast<std::ptrdiff_t>(k), m, k, b, WeightType::kBf16, rs_n, rs_k, n,
           bias, c, ldc);
}

double modify_score(double s, float softcap, float alibi_slope, double rel) {
  if (softcap > 0) s = softcap * std::tanh(s / softcap);
  if (alibi_slope != 0) s += static_cast<double>(alibi_slope) * rel;
  return s;
}

void attention(const AttentionArgs& args, double* out, std::ptrdiff_t ld_out) {
  std::vector<double> s(args.seq_len_kv);
  for (std::size_t i = args.q_begin; i < args.q_end; ++i) {
    const double position = static_cast<double>(i) + static_cast<double>(args.seq_len_kv) -
                            static_cast<double>(args.seq_len_q);
    const float* q = args.q + i * args.ld_q;
    for (std::size_t j = 0; j < args.seq_len_kv; ++j) {
      if (!visible(i, j, args.seq_len_q, args.seq_len_kv, args.causal, args.window)) {
        s[j] = kNegInf;  // overwrite, so NaN/Inf in masked keys never matter
        continue;
      }
      double acc = 0.0;
      for (std::size_t d = 0; d < args.head_dim; ++d) {
        const double kd = args.pages != nullptr ? page_key(*args.pages, j, d)
                                                : static_cast<double>(args.k[j * args.ld_k + d]);
        acc += static_cast<double>(q[d]) * kd;
      }
      s[j] = modify_score(acc * static_cast<double>(args.scale), args.softcap, args.alibi_slope,
                          static_cast<double>(j) - position);
    }
    softmax_in_place(s);
    double* o = out + (i - args.q_begin) * ld_out;
    for (std::size_t d = 0; d < args.head_dim; ++d) o[d] = 0.0;
    for (std::size_t j = 0; j < args.seq_len_kv; ++j) {
      if (s[j] == 0.0 &&
          !visible(i, j, args.seq_len_q, args.seq_len_kv, args.causal, args.window)) {
        continue;  // masked: skip, so a NaN value there cannot leak in as 0 * NaN
      }
      for (std::size_t d = 0; d < args.head_dim; ++d) {
        const double vd = args.pages != nullptr ? page_val(*args.pages, j, d)
                                                : static_cast<double>(args.v[j * args.ld_v + d]);
        o[d] += s[j] * vd;
      }
    }
  }
}

void decode(const float* q, const float* k, std::ptrdiff_t ld_k, const float* v,
            std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale, double* out,
            const DecodeMods& mods) {
  decode_rows(q, k, ld_k, v, ld_v, n_kv, head_dim, scale, out, mods);
}

void decode_paged(const float* q, const KvPages& pages, std::size_t first_key, std::size_t n_kv,
                  std::size_t head_dim, float scale, double* out, const DecodeMods& mods) {
  // decode() over the rows gathered (widened exactly, int8 scaled in double) from the table.
  std::vector<double> k(n_kv * head_dim), v(n_kv * head_dim);
  for (std::size_t j = 0; j < n_kv; ++j) {
    for (std::size_t d = 0; d < head_dim; ++d) {
      k[j * head_dim + d] = page_key(pages, first_key + j, d);
      v[j * head_dim + d] = page_val(pages, first_key + j, d);
    }
  }
  const auto ld = static_cast<std::ptrdiff_t>(head_dim);
  decode_rows(q, k.data(), ld, v.data(), ld, n_kv, head_dim, scale, out, mods);
}

void masked_softmax_rows(const float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols,
                         float scale, bool causal, std::ptrdiff_t visible_offset,
                         std::size_t window, double* out, std::ptrdiff_t ld_out, float softcap,
                         float alibi_slope) {
  std::vector<double> row(cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const KeyRange keys =
        causal ? keys_up_to(static_cast<std::int64_t>(r) + visible_offset, cols, window)
               : KeyRange{0, cols};
    for (std::size_t c = 0; c < cols; ++c) {
      const bool vis = keys.contains(c);
      row[c] = vis ? modify_score(static_cast<double>(s[r * ld + c]) * static_cast<double>(scale),
                                  softcap, alibi_slope,
                                  static_cast<double>(c) - static_cast<double>(r) -
                                      static_cast<double>(visible_offset))
                   : kNegInf;
    }
    softmax_in_place(row);
    for (std::size_t c = 0; c < cols; ++c) out[r * ld_out + c] = row[c];
  }
}

}  // namespace attn::kernels::reference
