// Teaching aid (attn/chapter/): the float64 reference, chapter 3's steps written plainly, and
// the oracle every fast path is tested against. Clear rather than fast: O(seq_len^2) memory,
// single-threaded.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/config.hpp"
#include "attn/export.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"

namespace attn::reference {

/// A dense row-major float64 matrix [rows, cols].
struct ATTN_API Matrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<double> values;

  Matrix() = default;
  Matrix(std::int64_t r, std::int64_t c) : rows(r), cols(c), values(r * c, 0.0) {}
  Matrix(std::int64_t r, std::int64_t c, std::vector<double> v)
      : rows(r), cols(c), values(std::move(v)) {}
  /// Copies a rank-2 view (or the last two dims of one batch item: see rows_of).
  static Matrix from(ConstTensorView view);

  double& operator()(std::int64_t r, std::int64_t c) { return values[r * cols + c]; }
  double operator()(std::int64_t r, std::int64_t c) const { return values[r * cols + c]; }
  std::span<const double> row(std::int64_t r) const {
    return {values.data() + r * cols, size_t(cols)};
  }
};

// ---- 3.3 simplified self-attention, step by step -------------------------------------

/// Returns dot(a, b) as an explicit loop (the chapter's step 1b).
ATTN_API double dot(std::span<const double> a, std::span<const double> b);
/// Returns the scores of token `query` against every row of x: x · x[query].
ATTN_API std::vector<double> query_scores(const Matrix& x, std::int64_t query);
/// Returns s / sum(s).
ATTN_API std::vector<double> normalize_by_sum(std::span<const double> s);
/// Returns exp(s) / sum(exp(s)) without subtracting the maximum (overflows for large s).
ATTN_API std::vector<double> softmax_naive(std::span<const double> s);
/// Returns the numerically stable softmax: exp(s - max) / sum(exp(s - max)).
ATTN_API std::vector<double> softmax(std::span<const double> s);
/// Returns sum_j weights[j] * values.row(j).
ATTN_API std::vector<double> context_vector(std::span<const double> weights, const Matrix& values);

// ---- matrix helpers ------------------------------------------------------------------

ATTN_API Matrix matmul(const Matrix& a, const Matrix& b);             ///< [n,k]·[k,m]
ATTN_API Matrix matmul_transposed(const Matrix& a, const Matrix& b);  ///< a·bᵀ
ATTN_API Matrix transpose(const Matrix& a);
ATTN_API Matrix scale(const Matrix& a, double factor);
/// Returns x Wᵀ + b for nn.Linear's W [d_out, d_in] and b [d_out] (b may be empty).
ATTN_API Matrix linear(const Matrix& x, const Matrix& w, std::span<const double> b = {});
/// Returns the stable softmax of each row; a row of -inf only gives zeros.
ATTN_API Matrix softmax_rows(const Matrix& scores);

// ---- 3.5 causal masking and dropout --------------------------------------------------

/// Way 1: zeroes the weights above the diagonal, then divides each row by its sum.
ATTN_API Matrix mask_after_softmax(const Matrix& weights);
/// Way 2: sets scores above the diagonal to -inf (before softmax). With fewer rows than
/// columns the mask aligns bottom-right: row i sees columns <= i + cols - rows.
ATTN_API Matrix mask_before_softmax(const Matrix& scores);
/// nn.Dropout(p) in training mode, drawing from `gen` in row-major order; survivors are
/// scaled by 1/(1-p). p == 0 returns x and draws nothing.
ATTN_API Matrix dropout(const Matrix& x, double p, TorchGenerator& gen);

// ---- the variants ----------------------------------------------------------------------

/// Options of scaled dot-product attention over one sequence.
struct AttentionOptions {
  double scale = 1.0;       ///< multiplies q·k before softmax
  bool causal = false;      ///< bottom-right aligned when q has fewer rows than k
  std::int64_t window = 0;  ///< > 0: row i sees at most the last `window` visible keys
  double softcap = 0;       ///< > 0: scores become softcap * tanh(s / softcap) (after scale)
  double alibi_slope = 0;   ///< adds slope * (j - position of row i) (bottom-right aligned)
};

/// softmax(mask(scale · q kᵀ)) · v for one sequence and one head; a row with no visible
/// key gives zeros.
ATTN_API Matrix attention(const Matrix& q, const Matrix& k, const Matrix& v,
                          const AttentionOptions& options);

/// The attention weights of the same computation, [q.rows, k.rows].
ATTN_API Matrix attention_weights(const Matrix& q, const Matrix& k,
                                  const AttentionOptions& options);

/// An output tensor in float64: [batch, seq_len, d_out] flattened.
struct Output {
  Shape shape;
  std::vector<double> values;
};

/// The oracle: runs `config`'s variant the way the chapter's classes do (the wrapper runs
/// its heads one by one and concatenates, MultiHeadAttention splits one projection and
/// applies out_proj), in float64. x: [batch, seq_len, d_in] or [seq_len, d_in]. 16-bit weight
/// matrices (Tensor::dtype) are widened exactly: the values the engine packs.
ATTN_API Result<Output> forward(const LayerConfig& config, const Weights& weights,
                                ConstTensorView x);

}  // namespace attn::reference
