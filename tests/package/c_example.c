/* A C program (compiled as C11) against the installed attn: a multi-head causal layer from raw
 * weights, forward checked against a plain double-precision loop, then prefill + decode steps
 * (single and batched) checked against the forward, then a layer loaded from a safetensors
 * file (argv[1], optional). Exits non-zero on any error, NaN or wrong value. */
#include <attn/c_api.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kBatch = 2, kSeq = 5, kDIn = 8, kDOut = 8, kHeads = 2, kCtx = 16 };

static int failures = 0;

static void check(attn_status s, const char* what) {
  if (s != ATTN_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, attn_status_name(s), attn_last_error());
    exit(1);
  }
}

static void expect_close(const float* got, const double* want, int n, const char* what) {
  for (int i = 0; i < n; ++i) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= 1e-5 + 1e-5 * fabs(want[i]))) { /* also catches NaN */
      fprintf(stderr, "%s[%d]: got %.7f, want %.7f\n", what, i, got[i], want[i]);
      ++failures;
      return;
    }
  }
}

static float next_uniform(unsigned* state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)((*state >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

/* y[n, r] = x[n, c] W^T + b, W: [r, c] */
static void linear(const double* x, int n, int c, const float* w, const float* b, int r,
                   double* y) {
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < r; ++j) {
      double s = b ? b[j] : 0.0;
      for (int k = 0; k < c; ++k) s += x[i * c + k] * w[j * c + k];
      y[i * r + j] = s;
    }
}

/* The chapter's MultiHeadAttention on one sequence: x [kSeq, kDIn] -> out [kSeq, kDOut]. */
static void reference(const float* xf, const float* const* w, double* out) {
  double x[kSeq * kDIn], q[kSeq * kDOut], k[kSeq * kDOut], v[kSeq * kDOut], ctx[kSeq * kDOut];
  for (int i = 0; i < kSeq * kDIn; ++i) x[i] = xf[i];
  linear(x, kSeq, kDIn, w[0], NULL, kDOut, q);
  linear(x, kSeq, kDIn, w[1], NULL, kDOut, k);
  linear(x, kSeq, kDIn, w[2], NULL, kDOut, v);
  const int hd = kDOut / kHeads;
  for (int h = 0; h < kHeads; ++h)
    for (int i = 0; i < kSeq; ++i) {
      double s[kSeq], m = -1e300, z = 0;
      for (int j = 0; j <= i; ++j) {
        s[j] = 0;
        for (int d = 0; d < hd; ++d) s[j] += q[i * kDOut + h * hd + d] * k[j * kDOut + h * hd + d];
        s[j] /= sqrt((double)hd);
        if (s[j] > m) m = s[j];
      }
      for (int j = 0; j <= i; ++j) z += (s[j] = exp(s[j] - m));
      for (int d = 0; d < hd; ++d) {
        double acc = 0;
        for (int j = 0; j <= i; ++j) acc += s[j] / z * v[j * kDOut + h * hd + d];
        ctx[i * kDOut + h * hd + d] = acc;
      }
    }
  linear(ctx, kSeq, kDOut, w[3], w[4], kDOut, out);
}

int main(int argc, char** argv) {
  if (attn_abi_version() != ATTN_ABI_VERSION) {
    fprintf(stderr, "ABI %u, header %d\n", attn_abi_version(), ATTN_ABI_VERSION);
    return 1;
  }
  printf("attn %s, ABI %u, default isa %s\n", attn_version(), attn_abi_version(),
         attn_default_isa());

  static float wq[kDOut * kDIn], wk[kDOut * kDIn], wv[kDOut * kDIn], wo[kDOut * kDOut], bo[kDOut];
  static float x[kBatch * kSeq * kDIn], out[kBatch * kSeq * kDOut];
  unsigned seed = 123;
  float* all[] = {wq, wk, wv, wo, bo, x};
  const int sizes[] = {kDOut * kDIn,  kDOut * kDIn, kDOut * kDIn,
                       kDOut * kDOut, kDOut,        kBatch * kSeq * kDIn};
  for (int t = 0; t < 6; ++t)
    for (int i = 0; i < sizes[t]; ++i) all[t][i] = next_uniform(&seed);

  attn_layer_config config = ATTN_LAYER_CONFIG_INIT;
  config.variant = ATTN_VARIANT_MULTI_HEAD_ATTENTION;
  config.d_in = kDIn;
  config.d_out = kDOut;
  config.num_heads = kHeads;
  config.context_length = kCtx;
  attn_weights weights = ATTN_WEIGHTS_INIT;
  weights.w_query = wq;
  weights.w_key = wk;
  weights.w_value = wv;
  weights.w_out = wo;
  weights.b_out = bo;
  attn_run_options options = ATTN_RUN_OPTIONS_INIT;
  options.threads = 2;
  attn_engine* engine = NULL;
  check(attn_engine_create(&config, &weights, &options, &engine), "attn_engine_create");
  printf("engine: isa %s, %d threads\n", attn_engine_isa(engine), attn_engine_threads(engine));

  /* forward vs the plain loop, per batch item */
  check(attn_forward(engine, x, kBatch, kSeq, out), "attn_forward");
  const float* w[] = {wq, wk, wv, wo, bo};
  double want[kBatch][kSeq * kDOut];
  for (int b = 0; b < kBatch; ++b) {
    reference(x + b * kSeq * kDIn, w, want[b]);
    expect_close(out + b * kSeq * kDOut, want[b], kSeq * kDOut, "forward");
  }

  /* prefill 3 tokens, then decode 2 with single steps (sequence 0) and batched steps (both) */
  attn_session *s0 = NULL, *s1 = NULL;
  check(attn_session_new(engine, &s0), "attn_session_new");
  check(attn_session_new(engine, &s1), "attn_session_new");
  float pre[3 * kDOut], tok[kDOut], two[2 * kDOut], xin[2 * kDIn];
  check(attn_session_prefill(s0, x, 3, pre), "attn_session_prefill");
  expect_close(pre, want[0], 3 * kDOut, "prefill");
  check(attn_session_prefill(s1, x + kSeq * kDIn, 3, pre), "attn_session_prefill");
  expect_close(pre, want[1], 3 * kDOut, "prefill (sequence 1)");
  check(attn_session_step(s0, x + 3 * kDIn, tok), "attn_session_step");
  expect_close(tok, want[0] + 3 * kDOut, kDOut, "step");
  /* sequence 1 catches up with a single step, then both advance in one batched step */
  check(attn_session_step(s1, x + kSeq * kDIn + 3 * kDIn, tok), "attn_session_step");
  expect_close(tok, want[1] + 3 * kDOut, kDOut, "step (sequence 1)");
  memcpy(xin, x + 4 * kDIn, sizeof(float) * kDIn);
  memcpy(xin + kDIn, x + kSeq * kDIn + 4 * kDIn, sizeof(float) * kDIn);
  attn_session* both[] = {s0, s1};
  check(attn_engine_step(engine, both, 2, xin, two), "attn_engine_step");
  expect_close(two, want[0] + 4 * kDOut, kDOut, "batched step, sequence 0");
  expect_close(two + kDOut, want[1] + 4 * kDOut, kDOut, "batched step, sequence 1");
  if (attn_session_position(s0) != 5 || attn_session_position(s1) != 5) {
    fprintf(stderr, "positions %lld %lld, want 5\n", (long long)attn_session_position(s0),
            (long long)attn_session_position(s1));
    ++failures;
  }

  /* errors come back as statuses with a message, and change nothing */
  static float long_x[(kCtx + 1) * kDIn], long_out[(kCtx + 1) * kDOut];
  if (attn_forward(engine, long_x, 1, kCtx + 1, long_out) == ATTN_OK) {
    fprintf(stderr, "seq_len > context_length was accepted\n");
    ++failures;
  }
  if (attn_last_error()[0] == '\0') {
    fprintf(stderr, "no error message\n");
    ++failures;
  }
  attn_layer_config bad = config;
  bad.struct_size = 8;
  attn_engine* none = NULL;
  if (attn_engine_create(&bad, &weights, NULL, &none) != ATTN_INVALID_ARGUMENT || none != NULL) {
    fprintf(stderr, "a short struct_size was accepted\n");
    ++failures;
  }
  /* ABI 2 dtypes: bf16 packed weights stay within bf16 rounding of the reference; a KV dtype
   * this build cannot run is refused by name; an ABI 1 run-options size gets f32 */
  {
    attn_run_options half = options;
    half.weight_dtype = ATTN_DTYPE_BF16;
    attn_engine* e16 = NULL;
    check(attn_engine_create(&config, &weights, &half, &e16), "attn_engine_create (bf16)");
    static float y16[kSeq * kDOut];
    check(attn_forward(e16, x, 1, kSeq, y16), "attn_forward (bf16)");
    double worst = 0;
    for (int i = 0; i < kSeq * kDOut; ++i) {
      const double e = fabs((double)y16[i] - want[0][i]);
      worst = e > worst || e != e ? e : worst;
    }
    if (!(worst <= 2e-2) || worst == 0) { /* bf16 keeps 8 bits: about 4e-3 here, never exact */
      fprintf(stderr, "bf16 weights: max error %g\n", worst);
      ++failures;
    }
    attn_engine_free(e16);
    attn_run_options kv = options;
    kv.compute_dtype = ATTN_DTYPE_BF16; /* needs weight_dtype bf16: refused by name */
    attn_engine* none16 = NULL;
    if (attn_engine_create(&config, &weights, &kv, &none16) == ATTN_OK ||
        strstr(attn_last_error(), "compute_dtype = bf16 multiplies bf16 weights") == NULL) {
      fprintf(stderr, "compute_dtype bf16 with f32 weights was not refused by name: %s\n",
              attn_last_error());
      ++failures;
      attn_engine_free(none16);
    }
    attn_run_options old = half;
    old.struct_size = offsetof(attn_run_options, weight_dtype);
    check(attn_engine_create(&config, &weights, &old, &e16), "attn_engine_create (ABI 1 options)");
    check(attn_forward(e16, x, 1, kSeq, y16), "attn_forward (ABI 1 options)");
    expect_close(y16, want[0], kSeq * kDOut, "forward with ABI 1 run options (f32)");
    attn_engine_free(e16);
  }

  /* the paged cache: two sessions in one pool, a fork, one ragged advance mixing a 2-token
   * chunk and a 1-token step; release gives the blocks back */
  {
    attn_pool* pool = NULL;
    check(attn_pool_create(engine, 1 << 20, &pool), "attn_pool_create");
    attn_session *pa = NULL, *pb = NULL;
    check(attn_session_new_in_pool(engine, pool, &pa), "attn_session_new_in_pool");
    check(attn_session_prefill(pa, x, 3, pre), "attn_session_prefill (pool)");
    expect_close(pre, want[0], 3 * kDOut, "prefill (pool)");
    check(attn_session_fork(pa, &pb), "attn_session_fork");
    if (attn_pool_used_bytes(pool) <= 0 || attn_pool_block_positions(pool) <= 0) {
      fprintf(stderr, "pool: used %lld bytes, blocks of %lld\n",
              (long long)attn_pool_used_bytes(pool), (long long)attn_pool_block_positions(pool));
      ++failures;
    }
    float rows[3 * kDIn], outs[3 * kDOut];
    memcpy(rows, x + 3 * kDIn, sizeof(float) * 2 * kDIn);        /* pa: tokens 3, 4 */
    memcpy(rows + 2 * kDIn, x + 3 * kDIn, sizeof(float) * kDIn); /* pb: token 3 */
    attn_session* ab[] = {pa, pb};
    const int64_t counts[] = {2, 1};
    check(attn_engine_advance(engine, ab, counts, 2, rows, outs), "attn_engine_advance");
    expect_close(outs, want[0] + 3 * kDOut, 2 * kDOut, "advance, 2-token chunk");
    expect_close(outs + 2 * kDOut, want[0] + 3 * kDOut, kDOut, "advance, forked step");
    const int64_t zero[] = {0, 1};
    if (attn_engine_advance(engine, ab, zero, 2, rows, outs) != ATTN_INVALID_ARGUMENT ||
        attn_session_position(pa) != 5) {
      fprintf(stderr, "new_tokens 0 was accepted or moved a session\n");
      ++failures;
    }
    attn_session_release(pa);
    attn_session_free(pb);
    if (attn_pool_used_bytes(pool) != 0 || attn_session_position(pa) != 0) {
      fprintf(stderr, "pool: %lld bytes used after release\n",
              (long long)attn_pool_used_bytes(pool));
      ++failures;
    }
    attn_session_free(pa);
    attn_pool_free(pool);
  }

  attn_session_free(s0);
  attn_session_free(s1);
  attn_engine_free(engine);

  /* ABI 2 settings: multi-query attention with rotary embeddings equals multi-head attention
   * whose heads all have the one kv head's key/value rows; an ABI 1 struct_size gets defaults */
  {
    const int hd = kDOut / kHeads;
    static float wk_tiled[kDOut * kDIn], wv_tiled[kDOut * kDIn], y_mqa[kSeq * kDOut],
        y_mha[kSeq * kDOut];
    for (int h = 0; h < kHeads; ++h) {
      memcpy(wk_tiled + h * hd * kDIn, wk, sizeof(float) * hd * kDIn);
      memcpy(wv_tiled + h * hd * kDIn, wv, sizeof(float) * hd * kDIn);
    }
    attn_layer_config mqa = config;
    mqa.num_kv_heads = 1;
    mqa.rope = ATTN_ROPE_NEOX;
    mqa.softcap = 3.0;
    attn_layer_config mha = mqa;
    mha.num_kv_heads = 0;
    attn_weights tiled = weights;
    tiled.w_key = wk_tiled;
    tiled.w_value = wv_tiled;
    attn_engine *e_mqa = NULL, *e_mha = NULL;
    check(attn_engine_create(&mqa, &weights, &options, &e_mqa), "attn_engine_create (mqa)");
    check(attn_engine_create(&mha, &tiled, &options, &e_mha), "attn_engine_create (mha)");
    check(attn_forward(e_mqa, x, 1, kSeq, y_mqa), "attn_forward (mqa)");
    check(attn_forward(e_mha, x, 1, kSeq, y_mha), "attn_forward (mha)");
    double want_mha[kSeq * kDOut];
    for (int i = 0; i < kSeq * kDOut; ++i) want_mha[i] = y_mha[i];
    expect_close(y_mqa, want_mha, kSeq * kDOut, "multi-query vs tiled multi-head");
    attn_layer_config got = ATTN_LAYER_CONFIG_INIT;
    check(attn_engine_config(e_mqa, &got), "attn_engine_config (mqa)");
    if (got.num_kv_heads != 1 || got.head_dim != hd || got.rope != ATTN_ROPE_NEOX ||
        got.rope_dim != hd || got.softcap != 3.0 || got.rope_theta != 10000.0) {
      fprintf(stderr, "config back: num_kv_heads %lld head_dim %lld rope %d rope_dim %lld\n",
              (long long)got.num_kv_heads, (long long)got.head_dim, got.rope,
              (long long)got.rope_dim);
      ++failures;
    }
    attn_engine_free(e_mqa);
    attn_engine_free(e_mha);
    /* a caller compiled against ABI 1 passes the shorter struct: the new fields default */
    attn_layer_config old = mqa;
    old.struct_size = offsetof(attn_layer_config, num_kv_heads);
    check(attn_engine_create(&old, &weights, &options, &e_mqa), "attn_engine_create (ABI 1)");
    check(attn_engine_config(e_mqa, &got), "attn_engine_config (ABI 1)");
    if (got.num_kv_heads != kHeads || got.rope != ATTN_ROPE_NONE || got.softcap != 0.0) {
      fprintf(stderr, "ABI 1 struct: num_kv_heads %lld rope %d\n", (long long)got.num_kv_heads,
              got.rope);
      ++failures;
    }
    attn_engine_free(e_mqa);
  }

  /* a layer from a safetensors file: the config comes back, the output is finite */
  if (argc > 1) {
    attn_load_options load = ATTN_LOAD_OPTIONS_INIT;
    check(attn_engine_load(argv[1], &load, NULL, &engine), "attn_engine_load");
    attn_layer_config got = ATTN_LAYER_CONFIG_INIT;
    check(attn_engine_config(engine, &got), "attn_engine_config");
    const size_t n = (size_t)got.d_out * 4;
    float* xs = calloc((size_t)got.d_in * 4, sizeof(float));
    float* ys = malloc(n * sizeof(float));
    for (int i = 0; i < got.d_in * 4; ++i) xs[i] = 0.1f * (float)(i % 7);
    check(attn_forward(engine, xs, 1, 4, ys), "attn_forward (file)");
    for (size_t i = 0; i < n; ++i)
      if (!isfinite(ys[i])) {
        fprintf(stderr, "file layer output %zu is not finite\n", i);
        ++failures;
        break;
      }
    printf("%s: d_in %lld, d_out %lld, %lld heads\n", argv[1], (long long)got.d_in,
           (long long)got.d_out, (long long)got.num_heads);
    free(xs);
    free(ys);
    attn_engine_free(engine);
  }
  if (failures) return 1;
  printf("c_example: forward, prefill, step and batched step match the reference\n");
  return 0;
}
