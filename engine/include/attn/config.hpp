// What an engine computes: the chapter variant, its sizes and how it is scheduled.
#pragma once

#include <cstdint>
#include <string_view>

#include "attn/export.hpp"
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

/// How forward() spreads its work over cores. Each backend gives bit-identical results.
enum class Backend {
  kTbb,     ///< oneTBB, inside a task_arena the engine owns (default)
  kOpenMp,  ///< OpenMP parallel regions, for servers that already run OpenMP
  kSerial,  ///< the calling thread only
};

/// Which instruction set the kernels use. kAuto: the ATTN_ISA environment variable when set
/// (sse2, avx2, avx512), else the best one this CPU supports.
enum class Isa { kAuto, kSse2, kAvx2, kAvx512 };

/// Engine configuration. Sizes are signed so that a negative value is reported, not wrapped.
struct ATTN_API Config {
  Variant variant = Variant::kMultiHeadAttention;
  std::int64_t d_in = 0;            ///< features per input token
  std::int64_t d_out = 0;           ///< features per output token (all heads together)
  std::int64_t num_heads = 1;       ///< heads; head_dim = d_out / num_heads
  std::int64_t context_length = 0;  ///< the most tokens one sequence may have
  bool qkv_bias = false;            ///< query/key/value projections have a bias
  bool causal = true;               ///< token i attends to tokens <= i only
  std::int64_t window = 0;          ///< > 0: token i attends to at most the last `window` tokens
  Backend backend = Backend::kTbb;
  int threads = 0;                  ///< worker threads; 0 = $ATTN_THREADS if set, else the
                                    ///< CPUs in this process's affinity mask
  Isa isa = Isa::kAuto;
  /// > 0: the most bytes of per-call buffers (activations, kernel scratch, the unfused
  /// path's scores, decode partials) one call may use; larger requests fail with
  /// kResourceExhausted instead of allocating. 0: no limit beyond available memory.
  std::int64_t max_workspace_bytes = 0;

  /// Returns the chapter's configuration of `variant`: causal for kCausalAttention and the
  /// multi-head variants, not for 3.3/3.4; d_out is the total output width.
  static Config chapter(Variant variant, std::int64_t d_in, std::int64_t d_out,
                        std::int64_t num_heads = 1, std::int64_t context_length = 1024);
  /// Returns GPT-2 small's attention: d 768, 12 heads, context 1024, qkv_bias, causal.
  static Config gpt2_small();

  std::int64_t head_dim() const noexcept { return num_heads > 0 ? d_out / num_heads : 0; }
  /// True when the variant has query/key/value projections (all but kSimplified).
  bool has_projections() const noexcept { return variant != Variant::kSimplified; }
  /// True when the variant has an output projection (kMultiHeadAttention only).
  bool has_out_proj() const noexcept { return variant == Variant::kMultiHeadAttention; }
};

/// Checks every field; the error names the field and its value.
ATTN_API Status validate(const Config& config);

ATTN_API const char* to_string(Variant v) noexcept;
ATTN_API const char* to_string(Backend b) noexcept;
ATTN_API const char* to_string(Isa isa) noexcept;
/// Parses "simplified", "v1", "v2", "causal", "wrapper", "mha".
ATTN_API Result<Variant> parse_variant(std::string_view name);
/// Parses "tbb", "openmp", "serial".
ATTN_API Result<Backend> parse_backend(std::string_view name);
/// Parses "auto", "sse2", "avx2", "avx512".
ATTN_API Result<Isa> parse_isa(std::string_view name);

}  // namespace attn
