// Kernel entry points. Raw pointers, sizes and leading dimensions (in floats); no threads,
// no allocation (scratch is passed in, 64-byte aligned), no engine types. Each entry point
// runs the copy compiled for `isa`, which must be supported (isa_supported). Each has a
// float64 twin in kernels/reference.hpp that the tests compare it with.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.hpp"

namespace attn::kernels {

// ---- GEMM: C = A · Bᵀ + bias ----------------------------------------------------------
//
// A: [m, k] row-major (row stride lda). B: [n, k] given by strides: element (j, p) is at
// b[j * rs_n + p * rs_k], which covers nn.Linear's [n, k] (rs_n = k, rs_k = 1) and the
// [k, n] layout of x @ W (rs_n = 1, rs_k = n). B is packed once (weights) into an opaque,
// ISA-specific panel layout, then any block of C can be computed from it.

/// The element type of a packed B: f32, or 16-bit bit patterns (bfloat16 or IEEE binary16)
/// that the kernels widen to f32 in registers before the f32 FMAs.
enum class WeightType : std::uint8_t { kF32, kBf16, kF16 };

/// Returns the floats gemm_pack_b writes for an [n, k] matrix (gemm_pack_b16 writes as many
/// 16-bit elements: the same panel layout, half the bytes).
std::size_t gemm_packed_floats(Isa isa, std::size_t n, std::size_t k) noexcept;
/// Packs B (see above) into `packed` (gemm_packed_floats floats, 64-byte aligned).
void gemm_pack_b(Isa isa, const float* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k, std::size_t n,
                 std::size_t k, float* packed) noexcept;
/// Packs 16-bit B elements (b(j, p) = b[j * rs_n + p * rs_k], bfloat16 or binary16 bits,
/// moved unchanged) into `packed` (gemm_packed_floats 16-bit elements, 64-byte aligned).
void gemm_pack_b16(Isa isa, const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                   std::size_t n, std::size_t k, std::uint16_t* packed) noexcept;
/// Returns the column granularity: gemm's n0 must be a multiple of it.
std::size_t gemm_n_step(Isa isa) noexcept;
/// Returns the floats of scratch one gemm call needs (independent of m, n, k).
std::size_t gemm_scratch_floats(Isa isa) noexcept;

/// The C block one task should compute for good cache use; n is a multiple of gemm_n_step.
struct GemmBlock {
  std::size_t m = 0;
  std::size_t n = 0;
};
GemmBlock gemm_task_block(Isa isa) noexcept;

struct GemmArgs {
  const float* a = nullptr;  ///< [m, k], row stride lda
  std::ptrdiff_t lda = 0;
  const float* packed_b = nullptr;  ///< gemm_pack_b of the whole [n_total, k] matrix
  std::size_t n_total = 0;          ///< columns of the packed matrix
  std::size_t m = 0;                ///< rows of A and C computed by this call
  std::size_t k = 0;
  std::size_t n0 = 0;           ///< first column computed (multiple of gemm_n_step)
  std::size_t n = 0;            ///< columns computed: n0 .. n0 + n - 1 (n0 + n <= n_total)
  const float* bias = nullptr;  ///< [n_total] indexed by absolute column, or null
  float* c = nullptr;           ///< points at C[0, 0]; this call writes C[0:m, n0:n0+n]
  std::ptrdiff_t ldc = 0;
  float* scratch = nullptr;  ///< gemm_scratch_floats floats
  /// kF32: B is packed_b. kBf16 / kF16: B is packed_b16 (gemm_pack_b16), widened to f32 in
  /// registers, then the same f32 FMA chains as kF32 (so the result equals the f32 kernel's on
  /// the widened weights, bit for bit).
  WeightType b_type = WeightType::kF32;
  const std::uint16_t* packed_b16 = nullptr;
  /// gemm only: round each element of A to bfloat16 (nearest even) as it is packed, so the
  /// f32 FMAs multiply bf16 activations (compute_dtype bf16 on CPUs without vdpbf16ps).
  /// The rounding is exact to reproduce; false leaves the f32 path as it was, bit for bit.
  bool round_a_bf16 = false;
};

/// C[0:m, n0:n0+n] = A · B[n0:n0+n, :]ᵀ + bias. Deterministic: each element is summed in
/// the same order whatever the block split of the caller.
void gemm(Isa isa, const GemmArgs& args) noexcept;

// ---- bf16 dot-product GEMM (compute_dtype bf16, AVX512-BF16 vdpbf16ps) ------------------
//
// C = bf16(A) · Bᵀ + bias with B in bfloat16: A rounded to bf16 (nearest even) as it is
// packed, products of bf16 pairs summed in f32 two k steps at a time (vdpbf16ps: the odd k's
// product, then the even one's, each one f32 rounding; bf16 subnormals read as zero and
// subnormal sums flushed to zero). B is packed once (gemm_dot_pack_b) into its own pair
// layout; the GemmArgs are those of gemm with b_type kBf16, packed_b16 that packing, n0 a
// multiple of gemm_dot_n_step and scratch gemm_dot_scratch_floats floats. Not per ISA: the
// only fast copy is AVX512-BF16's; twin: reference::gemm_bf16_dot.

/// Returns the 16-bit elements gemm_dot_pack_b writes for an [n, k] matrix.
std::size_t gemm_dot_packed_elems(std::size_t n, std::size_t k) noexcept;
/// Packs bf16 B (b(j, p) = b[j * rs_n + p * rs_k]) into `packed` (gemm_dot_packed_elems
/// elements, 64-byte aligned), zero-padded.
void gemm_dot_pack_b(const std::uint16_t* b, std::ptrdiff_t rs_n, std::ptrdiff_t rs_k,
                     std::size_t n, std::size_t k, std::uint16_t* packed) noexcept;
/// Returns the column granularity of gemm_bf16_dot (its n0 must be a multiple of it).
std::size_t gemm_dot_n_step() noexcept;
/// Returns the floats of scratch one gemm_bf16_dot call needs.
std::size_t gemm_dot_scratch_floats() noexcept;
/// The C block one task should compute.
GemmBlock gemm_dot_task_block() noexcept;
/// C[0:m, n0:n0+n] = bf16(A) · B[n0:n0+n, :]ᵀ + bias on vdpbf16ps when bf16_dot_supported(),
/// else on the scalar emulation below (correct, slow: engines do not call it then).
/// Deterministic as gemm.
void gemm_bf16_dot(const GemmArgs& args) noexcept;
/// The same driver on a scalar emulation of vdpbf16ps, on any CPU (for tests).
void gemm_bf16_dot_emulated(const GemmArgs& args) noexcept;

// ---- Score modifiers (every attention kernel and its twin) ---------------------------
//
// Applied to the scaled score s = scale * q·k, before the mask and the softmax, in this order:
//   softcap > 0:      s = softcap * tanh(s / softcap)                      (Gemma 2)
//   alibi_slope != 0: s = s + alibi_slope * (key_position - query_position)  (ALiBi)
// With both 0 the kernels run their unmodified code, bit for bit. Masked scores stay -inf
// (the mask overwrites after the modifiers). Positions are compared as floats: exact below
// 2^24 tokens.

// ---- Fused attention (flash attention with online softmax) ---------------------------
//
// One (batch, head): q [seq_len_q, head_dim], k and v [seq_len_kv, head_dim] (row strides
// ld_q, ld_k, ld_v). Computes rows q_begin .. q_end - 1 of
//   out = softmax(mask(scale · q kᵀ)) · v
// without materialising the score matrix. Causal alignment is bottom-right: row i sees keys
// j <= i + seq_len_kv - seq_len_q; with window > 0 also only j > that limit - window.
// Masked scores are overwritten with -inf (never added to), so NaN or Inf in a masked key or
// value cannot reach the output; a row with no visible key gives 0. Rows of out depend only
// on their own query row (not on the q_begin/q_end split), so any task split gives the same
// bits. out may alias q (same pointer and ld): each row block is read before it is written.

// ---- Paged keys and values (a session's cache in blocks, vLLM's PagedAttention) ---------
//
// One kv head's keys and values held in blocks of block_positions positions: the key of
// position p is the row blocks[p / block_positions] + k_offset + (p % block_positions) * ld
// (in elements of `type`), its value the same with v_offset. block_positions is a power of
// two and a multiple of kPageMultiple, so every kv-block of the flash kernel (fixed multiples
// of 128 keys from key 0) lies inside one block; the decode kernels resolve each key's row.
//
// Element types (KvType): f32 rows are read in place by every kernel. bf16 and f16 rows are
// widened in registers by the decode kernels (no copy: decode is bound by the bytes it
// reads) and by the flash kernel into a per-call scratch block of 128 f32 rows (prefill is
// bound by FLOPs; each kv-block is widened once per q-chunk). int8 rows are symmetric: the
// value of element d of position p is scale[p] * row[d], with one f32 scale per position and
// kv head (k_scale_offset / v_scale_offset: bytes from a block's base to the scale of its
// position 0; scales of one head are contiguous in position). Keys: the decode kernels take
// the dot product of q with the int8 row, then multiply by the scale; values: the softmax
// weight p_j is multiplied by scale_j before the FMAs (the sum of p_j is taken before).

/// block_positions must be a multiple of this: the flash kernel's kv-block (attention.hpp).
inline constexpr std::size_t kPageMultiple = 128;

/// The element type of a paged cache.
enum class KvType : std::uint8_t { kF32, kBf16, kF16, kInt8 };

/// Returns the bytes of one element of t.
constexpr std::size_t kv_type_bytes(KvType t) noexcept {
  return t == KvType::kF32 ? 4 : t == KvType::kInt8 ? 1 : 2;
}

struct KvPages {
  const void* const* blocks = nullptr;  ///< base of each block, in position order
  std::ptrdiff_t k_offset = 0;          ///< elements from a block's base to its key row 0
  std::ptrdiff_t v_offset = 0;          ///< ... to its value row 0
  std::ptrdiff_t ld = 0;                ///< row stride inside a block, in elements
  std::size_t block_positions = 0;      ///< power of two, multiple of kPageMultiple
  KvType type = KvType::kF32;
  std::ptrdiff_t k_scale_offset = 0;  ///< kInt8: bytes from a block's base to key scale 0
  std::ptrdiff_t v_scale_offset = 0;  ///< kInt8: ... to value scale 0
};

/// Returns the row of position p at `offset` (k_offset or v_offset) of `pages`, whose
/// elements are E (float for KvType::kF32, std::uint16_t for kBf16/kF16, std::int8_t for kInt8).
template <class E = float>
inline const E* page_row(const KvPages& pages, std::size_t p, std::ptrdiff_t offset) noexcept {
  return static_cast<const E*>(pages.blocks[p / pages.block_positions]) + offset +
         static_cast<std::ptrdiff_t>(p % pages.block_positions) * pages.ld;
}

/// Returns the int8 scale of position p at `scale_offset` (k_scale_offset or v_scale_offset).
inline float page_scale(const KvPages& pages, std::size_t p, std::ptrdiff_t scale_offset) noexcept {
  const auto* base = static_cast<const unsigned char*>(pages.blocks[p / pages.block_positions]);
  return reinterpret_cast<const float*>(base + scale_offset)[p % pages.block_positions];
}

struct AttentionArgs {
  const float* q = nullptr;
  std::ptrdiff_t ld_q = 0;
  const float* k = nullptr;
  std::ptrdiff_t ld_k = 0;
  const float* v = nullptr;
  std::ptrdiff_t ld_v = 0;
  float* out = nullptr;  ///< row i of the result goes to out + i * ld_out
  std::ptrdiff_t ld_out = 0;
  std::size_t head_dim = 0;
  std::size_t seq_len_q = 0;
  std::size_t seq_len_kv = 0;
  std::size_t q_begin = 0;
  std::size_t q_end = 0;
  float scale = 1.0f;
  bool causal = false;
  std::size_t window = 0;    ///< 0: no window
  float* scratch = nullptr;  ///< flash_attention_scratch_floats floats
  float softcap = 0;         ///< > 0: soft-capping (see "Score modifiers"); 0: none
  /// ALiBi slope of this head (0: none). Key j is at position j, query row i at
  /// i + seq_len_kv - seq_len_q (a session's new rows follow its cached keys).
  float alibi_slope = 0;
  /// When set, keys and values are read through this block table (k, v, ld_k and ld_v are
  /// ignored): key j is page_row(*pages, j, pages->k_offset).
  const KvPages* pages = nullptr;
};

/// Returns the query rows per call that suit the kernel's blocking (the engine's task size).
std::size_t flash_attention_q_block(Isa isa, std::size_t head_dim) noexcept;
/// Returns the scratch floats one call needs (O(block sizes), independent of seq_len).
std::size_t flash_attention_scratch_floats(Isa isa, std::size_t head_dim) noexcept;
void flash_attention(Isa isa, const AttentionArgs& args) noexcept;
/// Runs flash_attention over query blocks [block_begin, block_end) of `rows_per_block` rows
/// each (0: flash_attention_q_block), one call per block, as the engine's tasks do; the
/// args' q_begin/q_end are ignored. The one loop over q-blocks, shared by the engine, the
/// kernel tests and the kernel benchmarks.
void flash_attention_blocks(Isa isa, AttentionArgs args, std::size_t block_begin,
                            std::size_t block_end, std::size_t rows_per_block = 0) noexcept;
/// Returns the number of query blocks of `rows_per_block` rows (0: flash_attention_q_block)
/// that cover args.seq_len_q.
std::size_t flash_attention_block_count(Isa isa, std::size_t seq_len_q, std::size_t head_dim,
                                        std::size_t rows_per_block = 0) noexcept;

// ---- Decode: one query row against a long key range, in fixed chunks ------------------
//
// The keys are split into chunks of kDecodeChunk; each chunk gives a partial result
// (running max, sum of exponentials, unnormalised output) and decode_merge combines the
// partials in chunk order. The split is fixed, so the result does not depend on how many
// threads compute the chunks.

inline constexpr std::size_t kDecodeChunk = 512;

struct DecodePartial {
  float max = 0;  ///< the chunk's largest scaled score (kernel units), -inf if none visible
  float sum = 0;  ///< sum of exponentials relative to max
};

/// The score modifiers of one decode chunk (see "Score modifiers").
struct DecodeMods {
  float softcap = 0;            ///< > 0: soft-capping; 0: none
  float alibi_slope = 0;        ///< 0: no ALiBi bias
  std::int64_t key_offset = 0;  ///< position of the chunk's key 0 minus the query's position
};

/// Computes the partial of one chunk: q [head_dim], k and v [n_kv <= kDecodeChunk rows].
/// out_partial: [head_dim] unnormalised. `scale` is the same as AttentionArgs::scale.
void decode_chunk(Isa isa, const float* q, const float* k, std::ptrdiff_t ld_k, const float* v,
                  std::ptrdiff_t ld_v, std::size_t n_kv, std::size_t head_dim, float scale,
                  float* out_partial, DecodePartial* partial, const DecodeMods& mods = {}) noexcept;
/// The most query rows one decode_chunk_group call takes.
inline constexpr std::size_t kDecodeGroupMax = 16;

/// Grouped-query decode: `rows` (<= kDecodeGroupMax) query rows that share one kv head
/// (q: [rows, head_dim], row stride ld_q) against one chunk, each K and V row read from memory
/// once for all of them. Row g's result (within rounding of decode_chunk's: the dot products
/// are reduced in another order; its bits do not depend on the other rows) goes to
/// out_partials + g * ld_out and partials[g * ld_partial]; mods: [rows] (null: none).
void decode_chunk_group(Isa isa, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                        const float* k, std::ptrdiff_t ld_k, const float* v, std::ptrdiff_t ld_v,
                        std::size_t n_kv, std::size_t head_dim, float scale, float* out_partials,
                        std::ptrdiff_t ld_out, DecodePartial* partials, std::ptrdiff_t ld_partial,
                        const DecodeMods* mods) noexcept;
/// decode_chunk over keys [first_key, first_key + n_kv) of a paged cache (same bits as
/// decode_chunk over the same rows held contiguously).
void decode_chunk_paged(Isa isa, const float* q, const KvPages& pages, std::size_t first_key,
                        std::size_t n_kv, std::size_t head_dim, float scale, float* out_partial,
                        DecodePartial* partial, const DecodeMods& mods = {}) noexcept;
/// decode_chunk_group over keys [first_key, first_key + n_kv) of a paged cache (same bits as
/// decode_chunk_group over the same rows held contiguously).
void decode_chunk_group_paged(Isa isa, const float* q, std::ptrdiff_t ld_q, std::size_t rows,
                              const KvPages& pages, std::size_t first_key, std::size_t n_kv,
                              std::size_t head_dim, float scale, float* out_partials,
                              std::ptrdiff_t ld_out, DecodePartial* partials,
                              std::ptrdiff_t ld_partial, const DecodeMods* mods) noexcept;
/// Merges n_chunks partials (out_partials: [n_chunks, head_dim], row stride head_dim) in
/// order into out [head_dim]; no visible key gives 0.
void decode_merge(Isa isa, const float* out_partials, const DecodePartial* partials,
                  std::size_t n_chunks, std::size_t head_dim, float* out) noexcept;

// ---- Softmax over rows (the unfused path) --------------------------------------------

/// In place: s[r, :] = softmax(scale · s[r, :]) over the visible columns, 0 elsewhere.
/// Row r sees columns c <= r + visible_offset when causal (offset = cols_total - rows_total
/// for bottom-right alignment), and with window > 0 only c > r + visible_offset - window.
/// A row with no visible column becomes all 0. softcap and alibi_slope: see "Score
/// modifiers"; row r is at position r + visible_offset, column c at position c.
void masked_softmax_rows(Isa isa, float* s, std::ptrdiff_t ld, std::size_t rows, std::size_t cols,
                         float scale, bool causal, std::ptrdiff_t visible_offset,
                         std::size_t window, float softcap = 0, float alibi_slope = 0) noexcept;

// ---- Vector exp, exposed so its accuracy can be measured ------------------------------

/// y[i] = exp(x[i]) with the kernels' vector exp.
void vector_exp(Isa isa, const float* x, float* y, std::size_t n) noexcept;

// ---- Roofline probes, for the benchmarks -------------------------------------------

/// Runs `iterations` rounds of independent vector FMAs kept in registers (enough chains to
/// cover the FMA latency); returns the FLOPs done (2 per lane per FMA).
double peak_fma(Isa isa, std::size_t iterations) noexcept;
/// True when this binary has the bf16 dot-product probe and the CPU (and OS) can run
/// AVX512-BF16 (vdpbf16ps).
bool bf16_dot_supported() noexcept;

/// True when the CPU has F16C (vcvtph2ps), which the avx2 and avx512 kernels use to widen f16.
bool f16c_supported() noexcept;
/// Runs `iterations` rounds of independent vdpbf16ps in registers; returns the FLOPs done (4
/// per f32 lane per instruction), or 0 when !bf16_dot_supported(). Independent of `isa`.
double peak_bf16(std::size_t iterations) noexcept;
/// Reads n floats with vector loads and returns their sum (so the reads cannot be elided).
float read_sum(Isa isa, const float* data, std::size_t n) noexcept;

}  // namespace attn::kernels
