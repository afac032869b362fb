/* attn's C API: the engine and its sessions for C and any language with a C FFI (Go, Rust, ...).
 *
 * Conventions:
 * - Every symbol starts with attn_ / ATTN_. Handles are opaque; memory is float32, row-major,
 *   contiguous, owned by the caller unless a function says otherwise.
 * - Functions that can fail return attn_status. ATTN_OK is 0. On failure the calling thread's
 *   last error message is set (attn_last_error()); nothing else changes (outputs untouched,
 *   *out handles left as they were). No C++ exception crosses this API.
 * - ABI versioning: attn_abi_version() returns ATTN_ABI_VERSION of the library actually loaded.
 *   Every struct passed in starts with `struct_size`, which the caller sets to sizeof(struct)
 *   as compiled against its header (ATTN_..._INIT macros do it); later versions only append
 *   fields, and the library treats fields past struct_size as their defaults. A struct_size
 *   smaller than the first version's struct is refused (ATTN_INVALID_ARGUMENT). ABI 2 appended
 *   the layer settings of grouped-query, rotary, ALiBi and soft-capping layers to
 *   attn_layer_config and attn_load_options; ABI 1 callers keep working.
 * - Thread safety: an engine is immutable after creation; forward and the batched step may run
 *   from many threads at once. A session is used by one thread at a time.
 * - The paged KV cache (ABI 2): a pool of cache blocks shared by sessions (attn_pool_*),
 *   sessions in a pool, fork and release, and the ragged call attn_engine_advance.
 */
#ifndef ATTN_C_API_H_
#define ATTN_C_API_H_

#include <stddef.h>
#include <stdint.h>

#if defined(ATTN_STATIC_DEFINE)
#define ATTN_C_API
#elif defined(__GNUC__)
#define ATTN_C_API __attribute__((visibility("default")))
#else
#define ATTN_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI this header describes; compare with attn_abi_version() at run time. */
#define ATTN_ABI_VERSION 2

/** Outcome of a call; the values mirror attn::ErrorCode. */
typedef enum attn_status {
  ATTN_OK = 0,
  ATTN_INVALID_ARGUMENT = 1,   /**< a size, shape, option or tensor is not acceptable */
  ATTN_OUT_OF_RANGE = 2,       /**< e.g. more tokens than context_length, a full session */
  ATTN_RESOURCE_EXHAUSTED = 3, /**< allocation failed or a size overflows */
  ATTN_IO_ERROR = 4,           /**< a file could not be opened or read */
  ATTN_CORRUPT_DATA = 5,       /**< a file's contents are malformed */
  ATTN_UNSUPPORTED = 6,        /**< well-formed but not supported (dtype, instruction set) */
  ATTN_INTERNAL = 7            /**< a bug in attn */
} attn_status;

/** The chapter's attention variants (attn::Variant). */
typedef enum attn_variant {
  ATTN_VARIANT_SIMPLIFIED = 0,
  ATTN_VARIANT_SELF_ATTENTION_V1 = 1,
  ATTN_VARIANT_SELF_ATTENTION_V2 = 2,
  ATTN_VARIANT_CAUSAL_ATTENTION = 3,
  ATTN_VARIANT_MULTI_HEAD_WRAPPER = 4,
  ATTN_VARIANT_MULTI_HEAD_ATTENTION = 5
} attn_variant;

/** Which (query, key) pairs are visible (attn::Mask). */
typedef enum attn_mask {
  ATTN_MASK_VARIANT = 0, /**< the chapter's choice for the variant */
  ATTN_MASK_NONE = 1,
  ATTN_MASK_CAUSAL = 2
} attn_mask;

/** Rotary position embeddings (attn::Rope). */
typedef enum attn_rope {
  ATTN_ROPE_NONE = 0,
  ATTN_ROPE_NEOX = 1, /**< rotate-half: i pairs with i + rope_dim/2 (HF Llama, GPT-NeoX) */
  ATTN_ROPE_GPTJ = 2  /**< interleaved: 2i pairs with 2i + 1 */
} attn_rope;

typedef enum attn_backend {
  ATTN_BACKEND_TBB = 0,
  ATTN_BACKEND_OPENMP = 1,
  ATTN_BACKEND_SERIAL = 2
} attn_backend;

typedef enum attn_isa {
  ATTN_ISA_AUTO = 0,
  ATTN_ISA_SSE2 = 1,
  ATTN_ISA_AVX2 = 2,
  ATTN_ISA_AVX512 = 3
} attn_isa;

/** What the layer is (attn::LayerConfig). d_out is the total output width (all heads). */
typedef struct attn_layer_config {
  size_t struct_size; /**< sizeof(attn_layer_config) */
  int32_t variant;    /**< attn_variant */
  int64_t d_in;
  int64_t d_out;
  int64_t num_heads;
  int64_t context_length;
  int32_t qkv_bias; /**< 0 or 1 */
  int32_t mask;     /**< attn_mask */
  int64_t window;   /**< > 0: attend to at most the last `window` tokens (causal only) */
  /* ABI 2 (see attn::LayerConfig for each rule) */
  int64_t num_kv_heads; /**< grouped-query key/value heads, dividing num_heads; 0: num_heads */
  int64_t head_dim;     /**< features per head; 0: d_out / num_heads */
  double scale;         /**< multiplier of q.k; 0: 1 / sqrt(head_dim) */
  int32_t rope;         /**< attn_rope */
  int32_t alibi;        /**< 0 or 1: ALiBi biases (not with rope) */
  double rope_theta;    /**< rotary base, 10000 by default */
  int64_t rope_dim;     /**< rotated features per head (even); 0: head_dim */
  double softcap;       /**< > 0: logit soft-capping; 0: none */
} attn_layer_config;
#define ATTN_LAYER_CONFIG_INIT                                                   \
  {                                                                              \
    sizeof(attn_layer_config), ATTN_VARIANT_MULTI_HEAD_ATTENTION, 0, 0, 1, 0, 0, \
        ATTN_MASK_VARIANT, 0, 0, 0, 0.0, ATTN_ROPE_NONE, 0, 10000.0, 0, 0.0      \
  }

/** Element types (attn::DType) of weights, arithmetic and the KV cache (attn_run_options). */
typedef enum attn_dtype {
  ATTN_DTYPE_F32 = 0,
  ATTN_DTYPE_BF16 = 1,
  ATTN_DTYPE_F16 = 2,
  ATTN_DTYPE_INT8 = 3
} attn_dtype;

/** How the engine runs (attn::RunOptions). backend, threads and isa do not change the output
 *  bits; the ABI 2 dtypes do (see docs/precision.md). */
typedef struct attn_run_options {
  size_t struct_size;          /**< sizeof(attn_run_options) */
  int32_t backend;             /**< attn_backend */
  int32_t threads;             /**< 0: $ATTN_THREADS, else every CPU of the process */
  int32_t isa;                 /**< attn_isa */
  int64_t max_workspace_bytes; /**< 0: no limit */
  /* ABI 2 (attn::RunOptions: which settings take which types, what this CPU can run) */
  int32_t weight_dtype;  /**< attn_dtype: F32 (default), BF16 or F16 packed weights */
  int32_t compute_dtype; /**< attn_dtype: F32 (default) or BF16 */
  int32_t kv_dtype;      /**< attn_dtype of the session cache: F32 (default), BF16, F16, INT8 */
} attn_run_options;
#define ATTN_RUN_OPTIONS_INIT                                                        \
  {                                                                                  \
    sizeof(attn_run_options), ATTN_BACKEND_TBB, 0, ATTN_ISA_AUTO, 0, ATTN_DTYPE_F32, \
        ATTN_DTYPE_F32, ATTN_DTYPE_F32                                               \
  }

/** Raw weights in nn.Linear layout (y = x W^T + b), read during attn_engine_create only.
 *  With q_dim = num_heads * head_dim and kv_dim = num_kv_heads * head_dim (both d_out unless
 *  the ABI 2 fields say otherwise): w_query [q_dim, d_in], w_key and w_value [kv_dim, d_in]
 *  (NULL for the simplified variant); b_query [q_dim], b_key and b_value [kv_dim] when
 *  qkv_bias, else NULL; w_out [d_out, q_dim] and b_out [d_out] for the multi-head attention
 *  variant only (b_out may be NULL: no bias), else NULL. */
typedef struct attn_weights {
  size_t struct_size; /**< sizeof(attn_weights) */
  const float* w_query;
  const float* w_key;
  const float* w_value;
  const float* b_query;
  const float* b_key;
  const float* b_value;
  const float* w_out;
  const float* b_out;
} attn_weights;
#define ATTN_WEIGHTS_INIT \
  { sizeof(attn_weights), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL }

/** Where a layer is in a safetensors file and what the file may not say (attn::io::LayerOptions).
 */
typedef struct attn_load_options {
  size_t struct_size;     /**< sizeof(attn_load_options) */
  const char* prefix;     /**< NULL or "" : the file's only layer; else e.g. "h.1." */
  const char* layout;     /**< NULL or "auto", "v1", "v2", "causal", "wrapper", "mha", "torch-mha",
                             "gpt2", "hf-llama", "gpt-neox" */
  int64_t num_heads;      /**< 0: from the file */
  int64_t context_length; /**< 0: from the file */
  int32_t causal;         /**< -1: from the file, 0: no mask, 1: causal */
  /* ABI 2: each overrides the file's __metadata__ and shapes; 0 (or -1) leaves it to them */
  int64_t num_kv_heads; /**< 0: from the file */
  int64_t head_dim;     /**< 0: from the file */
  int32_t rope;         /**< -1: from the file, else attn_rope */
  int32_t alibi;        /**< -1: from the file, 0 or 1 */
  double rope_theta;    /**< 0: from the file */
  int64_t rope_dim;     /**< -1: from the file */
  double scale;         /**< 0: from the file */
  int64_t window;       /**< -1: from the file */
  double softcap;       /**< 0: from the file */
} attn_load_options;
#define ATTN_LOAD_OPTIONS_INIT \
  { sizeof(attn_load_options), NULL, NULL, 0, 0, -1, 0, 0, -1, -1, 0.0, -1, 0.0, -1, 0.0 }

typedef struct attn_engine attn_engine;
typedef struct attn_session attn_session;
typedef struct attn_pool attn_pool;

/** Returns ATTN_ABI_VERSION of the loaded library. */
ATTN_C_API uint32_t attn_abi_version(void);
/** Returns the library version, e.g. "0.1.0" (static storage). */
ATTN_C_API const char* attn_version(void);
/** Returns what ATTN_ISA_AUTO resolves to on this machine: "sse2", "avx2" or "avx512". */
ATTN_C_API const char* attn_default_isa(void);
/** Returns a short name for `status` ("ok", "invalid argument", ...; static storage). */
ATTN_C_API const char* attn_status_name(attn_status status);
/** Returns the message of the last failed call on this thread ("" if none). Valid until the
 *  next failing call on the same thread. */
ATTN_C_API const char* attn_last_error(void);

/** Creates an engine from a config and raw weights (copied and packed; the buffers may be
 *  freed afterwards). options may be NULL (defaults). On success *engine is set. */
ATTN_C_API attn_status attn_engine_create(const attn_layer_config* config,
                                          const attn_weights* weights,
                                          const attn_run_options* options, attn_engine** engine);
/** Creates an engine from the attention layer in a safetensors file. load and options may
 *  be NULL. Fails when the file has no context_length (a mask buffer or metadata) and none is
 *  given. On success *engine is set. With options->weight_dtype bf16 (f16), weights stored as
 *  BF16 (F16) are packed from the file's bits without a float32 copy. */
ATTN_C_API attn_status attn_engine_load(const char* path, const attn_load_options* load,
                                        const attn_run_options* options, attn_engine** engine);
/** Frees an engine (NULL is a no-op). Sessions created from it stay valid: they share its state. */
ATTN_C_API void attn_engine_free(attn_engine* engine);

/** Copies the engine's layer config into *config (fields up to config->struct_size). */
ATTN_C_API attn_status attn_engine_config(const attn_engine* engine, attn_layer_config* config);
/** Returns the instruction set the engine's kernels run ("sse2", "avx2", "avx512"). */
ATTN_C_API const char* attn_engine_isa(const attn_engine* engine);
/** Returns how many worker threads the engine uses. */
ATTN_C_API int32_t attn_engine_threads(const attn_engine* engine);

/** x: [batch, seq_len, d_in] -> out: [batch, seq_len, d_out]. Thread-safe. */
ATTN_C_API attn_status attn_forward(const attn_engine* engine, const float* x, int64_t batch,
                                    int64_t seq_len, float* out);

/** Creates a KV-cache session of capacity context_length (causal engines only). */
ATTN_C_API attn_status attn_session_new(const attn_engine* engine, attn_session** session);
/** Appends a prompt: x: [seq_len, d_in] -> out: [seq_len, d_out]. */
ATTN_C_API attn_status attn_session_prefill(attn_session* session, const float* x, int64_t seq_len,
                                            float* out);
/** Appends one token: x: [d_in] -> out: [d_out]. */
ATTN_C_API attn_status attn_session_step(attn_session* session, const float* x, float* out);
/** Returns how many positions the session holds (-1 for NULL). */
ATTN_C_API int64_t attn_session_position(const attn_session* session);
/** Forgets every cached position. */
ATTN_C_API void attn_session_reset(attn_session* session);
/** Frees a session (NULL is a no-op). */
ATTN_C_API void attn_session_free(attn_session* session);

/** Advances n distinct sessions of `engine` by one token each: x: [n, d_in] (row i for
 *  sessions[i]) -> out: [n, d_out]. On any error no session changes. Thread-safe for
 *  disjoint sets of sessions. */
ATTN_C_API attn_status attn_engine_step(const attn_engine* engine, attn_session* const* sessions,
                                        int64_t n, const float* x, float* out);

/* ---- the paged KV cache (ABI 2; attn::CachePool, Session::fork, Engine::advance) ---- */

/** Creates a pool of floor(budget_bytes / block bytes) cache blocks (attn_pool_block_positions
 *  positions each) shaped for `engine`'s cache; shared by sessions of engines with the same
 *  kv heads and head_dim. Thread-safe. On success *pool is set. */
ATTN_C_API attn_status attn_pool_create(const attn_engine* engine, int64_t budget_bytes,
                                        attn_pool** pool);
/** Frees a pool handle (NULL is a no-op); its memory lives while a session of it does. */
ATTN_C_API void attn_pool_free(attn_pool* pool);
/** Returns the positions per block (-1 for NULL). */
ATTN_C_API int64_t attn_pool_block_positions(const attn_pool* pool);
/** Returns the bytes of the blocks sessions hold now (-1 for NULL). */
ATTN_C_API int64_t attn_pool_used_bytes(const attn_pool* pool);
/** Returns the bytes of all blocks (-1 for NULL). */
ATTN_C_API int64_t attn_pool_capacity_bytes(const attn_pool* pool);
/** Creates an empty session whose blocks come from `pool` as it grows. */
ATTN_C_API attn_status attn_session_new_in_pool(const attn_engine* engine, attn_pool* pool,
                                                attn_session** session);
/** Creates a session with `session`'s positions, sharing its full blocks copy-on-write. */
ATTN_C_API attn_status attn_session_fork(const attn_session* session, attn_session** fork);
/** Returns the session's blocks to its pool (position 0); the same as attn_session_reset. */
ATTN_C_API void attn_session_release(attn_session* session);
/** Advances n distinct sessions of `engine`, session i by new_tokens[i] >= 1 tokens:
 *  x: [sum(new_tokens), d_in] (the sessions' rows in order) -> out: [sum, d_out]. Prompt
 *  chunks and decode steps mix in one call; on any error (pool exhausted included) no session
 *  changes. */
ATTN_C_API attn_status attn_engine_advance(const attn_engine* engine, attn_session* const* sessions,
                                           const int64_t* new_tokens, int64_t n, const float* x,
                                           float* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ATTN_C_API_H_ */
