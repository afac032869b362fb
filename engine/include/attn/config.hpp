// What an engine computes (LayerConfig: the chapter variant, its sizes and its mask) and how
// it runs (RunOptions: threads, backend, instruction set, memory limit).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "attn/dtype.hpp"
#include "attn/export.hpp"
#include "attn/isa.hpp"
#include "attn/status.hpp"

namespace attn {

/// The attention mechanisms of chapter 3. All of them run through the same fast engine.
enum class Variant {
  kSimplified,          ///< 3.3: no weights; q = k = v = x, no 1/sqrt(d) scaling. d_out == d_in.
  kSelfAttentionV1,     ///< 3.4: q = x W_q with W of shape [d_in, d_out]; one head, no bias.
  kSelfAttentionV2,     ///< 3.4: nn.Linear projections (W of shape [d_out, d_in]); one head.
  kCausalAttention,     ///< 3.5: v2 with the causal mask; one head.
  kMultiHeadWrapper,    ///< 3.6.1: num_heads CausalAttention heads, outputs concatenated.
  kMultiHeadAttention,  ///< 3.6.2: weight splits, head_dim = d_out / num_heads, out_proj.
};

/// Which (query, key) pairs a layer lets through.
enum class Mask {
  kVariant,  ///< the chapter's choice for the variant: causal for kCausalAttention and the
             ///< multi-head variants, none for 3.3 and 3.4 (default)
  kNone,     ///< every token sees every token (as nn.MultiheadAttention without a mask);
             ///< contradicts kCausalAttention and kMultiHeadWrapper, which validate() refuses
  kCausal,   ///< token i sees tokens <= i (section 3.5.1 masks 3.3/3.4's weights this way)
};

/// Rotary position embeddings, applied to queries and keys after projection at each token's
/// absolute position (a session's token at position p rotates by p; cached keys are stored
/// rotated). Frequencies as the Hugging Face code computes them, in float32:
/// inv_freq[i] = 1 / theta^(2i / rope_dim), angle = position * inv_freq[i].
enum class Rope {
  kNone,  ///< no rotary embedding (default)
  kNeox,  ///< rotate-half (GPT-NeoX, Hugging Face Llama/Mistral/Qwen2): i pairs with i + rope_dim/2
  kGptj,  ///< interleaved (GPT-J): 2i pairs with 2i + 1
};

/// How work is spread over cores. Each backend gives bit-identical results.
enum class Backend {
  kTbb,     ///< oneTBB, inside a task_arena the engine owns (default)
  kOpenMp,  ///< OpenMP parallel regions, for servers that already run OpenMP
  kSerial,  ///< the calling thread only
};

/// What the layer is: the variant, its sizes and its mask. Sizes are signed so that a negative
/// value is reported, not wrapped. validate() rejects a mask that contradicts the variant.
struct ATTN_API LayerConfig {
  Variant variant = Variant::kMultiHeadAttention;
  std::int64_t d_in = 0;            ///< features per input token
  std::int64_t d_out = 0;           ///< features per output token (all heads together)
  std::int64_t num_heads = 1;       ///< heads; head_dim = d_out / num_heads
  std::int64_t context_length = 0;  ///< the most tokens one sequence may have
  bool qkv_bias = false;            ///< query/key/value projections have a bias
  Mask mask = Mask::kVariant;       ///< which pairs are visible (see Mask)
  std::int64_t window = 0;          ///< > 0: token i attends to at most the last `window`
                                    ///< tokens (needs a causal mask)
  /// Key/value heads (grouped-query attention; 1 is multi-query): query head h reads kv head
  /// h / (num_heads / num_kv_heads); must divide num_heads. 0: num_heads (every head its own).
  /// Other than num_heads: kMultiHeadAttention only.
  std::int64_t num_kv_heads = 0;
  /// Features per head. 0: d_out / num_heads. Given, the query projection is num_heads *
  /// head_dim wide and out_proj maps that back to d_out (kMultiHeadAttention only; the other
  /// variants output the heads themselves, so num_heads * head_dim must equal d_out).
  std::int64_t head_dim = 0;
  double scale = 0;           ///< multiplies q·k; 0: 1/sqrt(head_dim) (1 for kSimplified)
  Rope rope = Rope::kNone;    ///< rotary position embeddings (not with kSimplified)
  double rope_theta = 10000;  ///< the rotary base
  std::int64_t rope_dim = 0;  ///< rotated features of each head (even, <= head_dim; the rest
                              ///< pass through, GPT-NeoX's partial rotary); 0: head_dim
  /// > 0: logit soft-capping (Gemma 2): each scaled score s becomes softcap * tanh(s /
  /// softcap), before the mask and the softmax. 0: none. Must be finite and >= 0.
  double softcap = 0;
  /// ALiBi (Press et al., as BLOOM and MPT): head h adds alibi_slopes(num_heads)[h] *
  /// (key_position - query_position) to its scores (after soft-capping, before the mask), at
  /// absolute positions (a session's token at position p). Not with rope.
  bool alibi = false;

  /// Returns the chapter's configuration of `variant` (mask kVariant); d_out is the total
  /// output width.
  static LayerConfig chapter(Variant variant, std::int64_t d_in, std::int64_t d_out,
                             std::int64_t num_heads = 1, std::int64_t context_length = 1024);
  /// Returns GPT-2 small's attention: d 768, 12 heads, context 1024, qkv_bias, causal.
  static LayerConfig gpt2_small();

  /// Returns head_dim, or d_out / num_heads when it is 0.
  std::int64_t resolved_head_dim() const noexcept {
    return head_dim > 0 ? head_dim : (num_heads > 0 ? d_out / num_heads : 0);
  }
  /// Returns num_kv_heads, or num_heads when it is 0.
  std::int64_t kv_heads() const noexcept { return num_kv_heads > 0 ? num_kv_heads : num_heads; }
  /// Returns the width of the query projection (and of the heads side by side).
  std::int64_t q_dim() const noexcept { return num_heads * resolved_head_dim(); }
  /// Returns the width of the key (and of the value) projection.
  std::int64_t kv_dim() const noexcept { return kv_heads() * resolved_head_dim(); }
  /// Returns the scale of q·k (scale, or its default).
  double resolved_scale() const noexcept;
  /// Returns the rotated features of each head (rope_dim, or head_dim when it is 0).
  std::int64_t resolved_rope_dim() const noexcept {
    return rope == Rope::kNone ? 0 : (rope_dim > 0 ? rope_dim : resolved_head_dim());
  }
  /// True when token i sees only tokens <= i (the mask, resolved for the variant).
  bool causal() const noexcept;
  /// True when the variant has query/key/value projections (all but kSimplified).
  bool has_projections() const noexcept { return variant != Variant::kSimplified; }
  /// True when the variant has an output projection (kMultiHeadAttention only).
  bool has_out_proj() const noexcept { return variant == Variant::kMultiHeadAttention; }
};

/// How an engine runs. None of these change the output bits, except the dtypes (see
/// docs/precision.md for the error each gives against the float64 reference).
struct ATTN_API RunOptions {
  Backend backend = Backend::kTbb;
  int threads = 0;  ///< worker threads; 0 = $ATTN_THREADS if set, else the CPUs in this
                    ///< process's affinity mask
  Isa isa = Isa::kAuto;
  /// > 0: the most bytes of per-call buffers (activations, kernel scratch, the unfused
  /// path's scores, decode partials) one call may use; larger requests fail with
  /// kResourceExhausted instead of allocating. 0: no limit beyond available memory.
  std::int64_t max_workspace_bytes = 0;
  /// Storage of the packed projection weights: kF32, kBf16 or kF16 (half the bytes; biases
  /// stay f32). f32 weights are rounded to nearest even when packed; a finite weight that
  /// rounds past the dtype's largest finite value makes create() fail (kInvalidArgument,
  /// naming the tensor, index and value); NaN and Inf stay NaN and Inf.
  DType weight_dtype = DType::kF32;
  /// The projections' multiply-adds: kF32 (16-bit weights widened in registers) or kBf16
  /// (needs weight_dtype kBf16): activations rounded to bf16 (nearest even) as each GEMM block
  /// is packed, bf16 x bf16 products summed in f32, bias added in f32. With isa avx512 on a
  /// CPU with AVX512-BF16 the GEMM runs vdpbf16ps; elsewhere (or with isa forced lower) the
  /// same rounded operands run through f32 FMAs: equal products (vdpbf16ps also reads
  /// subnormals as zero), sums in another order (results agree to f32 rounding, not bit for
  /// bit). The attention itself stays f32.
  DType compute_dtype = DType::kF32;
  /// Session key/value cache storage: kF32, kBf16, kF16 (half the bytes) or kInt8 (a quarter,
  /// plus one f32 scale per position, kv head and keys/values: symmetric, max|x| / 127).
  /// Keys and values are rounded when a call stores them; a finite value beyond bf16/f16's
  /// range saturates to the largest finite value, NaN and Inf stay; an int8 row holding NaN
  /// or Inf is stored as NaN. The kernels read the cache in its type and widen it in
  /// registers. Forward() has no cache and ignores it. See docs/precision.md.
  DType kv_dtype = DType::kF32;
};

/// Returns the ALiBi slope of each of num_heads heads: the paper's geometric sequence
/// 2^(-8 i / n), i = 1..n, for n a power of two; otherwise (its get_slopes, BLOOM's
/// build_alibi_tensor) those of the largest power of two p < n, then every other slope of
/// 2p's sequence for the remaining n - p heads. Empty for num_heads <= 0.
ATTN_API std::vector<double> alibi_slopes(std::int64_t num_heads);

/// Checks every field and their combination; the error names the fields and their values.
ATTN_API Status validate(const LayerConfig& config);
/// Checks every field; the error names the field and its value.
ATTN_API Status validate(const RunOptions& options);

ATTN_API const char* to_string(Variant v) noexcept;
ATTN_API const char* to_string(Mask m) noexcept;
ATTN_API const char* to_string(Rope r) noexcept;
ATTN_API const char* to_string(Backend b) noexcept;
ATTN_API const char* to_string(Isa isa) noexcept;
/// Parses "simplified", "v1", "v2", "causal", "wrapper", "mha".
ATTN_API Result<Variant> parse_variant(std::string_view name);
/// Parses "none", "neox", "gptj".
ATTN_API Result<Rope> parse_rope(std::string_view name);
/// Parses "tbb", "openmp", "serial".
ATTN_API Result<Backend> parse_backend(std::string_view name);
/// Parses "auto", "sse2", "avx2", "avx512".
ATTN_API Result<Isa> parse_isa(std::string_view name);

}  // namespace attn
