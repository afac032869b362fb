// The C API (attn/c_api.h): handles around Engine and Session, structs checked by struct_size,
// every failure turned into a status plus a thread-local message; nothing throws across it.
#include "attn/c_api.h"

#include <cstddef>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "attn/cache_pool.hpp"
#include "attn/engine.hpp"
#include "attn/io.hpp"
#include "attn/runtime.hpp"

struct attn_engine {
  attn::Engine engine;
};
struct attn_session {
  attn::Session session;
  attn::LayerConfig config;
};
struct attn_pool {
  attn::CachePool pool;
};

namespace {

// The C enums are casts of the C++ ones: keep their values in step.
static_assert(int(attn::ErrorCode::kInvalidArgument) == ATTN_INVALID_ARGUMENT &&
              int(attn::ErrorCode::kOutOfRange) == ATTN_OUT_OF_RANGE &&
              int(attn::ErrorCode::kResourceExhausted) == ATTN_RESOURCE_EXHAUSTED &&
              int(attn::ErrorCode::kIoError) == ATTN_IO_ERROR &&
              int(attn::ErrorCode::kCorruptData) == ATTN_CORRUPT_DATA &&
              int(attn::ErrorCode::kUnsupported) == ATTN_UNSUPPORTED &&
              int(attn::ErrorCode::kInternal) == ATTN_INTERNAL);
static_assert(int(attn::Variant::kSimplified) == ATTN_VARIANT_SIMPLIFIED &&
              int(attn::Variant::kSelfAttentionV1) == ATTN_VARIANT_SELF_ATTENTION_V1 &&
              int(attn::Variant::kSelfAttentionV2) == ATTN_VARIANT_SELF_ATTENTION_V2 &&
              int(attn::Variant::kCausalAttention) == ATTN_VARIANT_CAUSAL_ATTENTION &&
              int(attn::Variant::kMultiHeadWrapper) == ATTN_VARIANT_MULTI_HEAD_WRAPPER &&
              int(attn::Variant::kMultiHeadAttention) == ATTN_VARIANT_MULTI_HEAD_ATTENTION);
static_assert(int(attn::Mask::kVariant) == ATTN_MASK_VARIANT &&
              int(attn::Mask::kNone) == ATTN_MASK_NONE &&
              int(attn::Mask::kCausal) == ATTN_MASK_CAUSAL);
static_assert(int(attn::Backend::kTbb) == ATTN_BACKEND_TBB &&
              int(attn::Backend::kOpenMp) == ATTN_BACKEND_OPENMP &&
              int(attn::Backend::kSerial) == ATTN_BACKEND_SERIAL);
static_assert(int(attn::DType::kF32) == ATTN_DTYPE_F32 &&
              int(attn::DType::kBf16) == ATTN_DTYPE_BF16 &&
              int(attn::DType::kF16) == ATTN_DTYPE_F16 &&
              int(attn::DType::kInt8) == ATTN_DTYPE_INT8);
static_assert(int(attn::Rope::kNone) == ATTN_ROPE_NONE &&
              int(attn::Rope::kNeox) == ATTN_ROPE_NEOX && int(attn::Rope::kGptj) == ATTN_ROPE_GPTJ);
static_assert(int(attn::Isa::kAuto) == ATTN_ISA_AUTO && int(attn::Isa::kSse2) == ATTN_ISA_SSE2 &&
              int(attn::Isa::kAvx2) == ATTN_ISA_AVX2 && int(attn::Isa::kAvx512) == ATTN_ISA_AVX512);

thread_local std::string g_last_error;

attn_status fail(attn_status code, std::string message) {
  try {
    g_last_error = std::move(message);
  } catch (...) {
    g_last_error.clear();  // the status still says what happened
  }
  return code;
}

attn_status from(const attn::Status& s) {
  if (s.ok()) return ATTN_OK;
  return fail(static_cast<attn_status>(s.code()), s.message());
}

// Runs `fn` (returning attn_status) and turns any escaping exception into a status.
template <class F>
attn_status guard(F&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return fail(ATTN_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    return fail(ATTN_INTERNAL, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return fail(ATTN_INTERNAL, "unexpected exception");
  }
}

// The size of each struct in ABI 1 (its first version): the smallest struct_size accepted.
template <class T>
constexpr size_t kFirstSize = sizeof(T);
template <>
constexpr size_t kFirstSize<attn_layer_config> = offsetof(attn_layer_config, num_kv_heads);
template <>
constexpr size_t kFirstSize<attn_load_options> = offsetof(attn_load_options, num_kv_heads);
template <>
constexpr size_t kFirstSize<attn_run_options> = offsetof(attn_run_options, weight_dtype);

// Copies a caller's struct whose first field is struct_size. NULL keeps `out` (the defaults).
// Fields past the caller's struct_size keep their defaults (out's); a struct_size smaller than
// the struct's first version is an error.
template <class T>
attn_status read_struct(const T* in, T& out, const char* what) {
  if (in == nullptr) return ATTN_OK;
  if (in->struct_size < kFirstSize<T>) {
    return fail(ATTN_INVALID_ARGUMENT, std::string(what) + ".struct_size is " +
                                           std::to_string(in->struct_size) +
                                           ", expected at least " + std::to_string(kFirstSize<T>) +
                                           " (set it to sizeof(" + what + "))");
  }
  std::memcpy(&out, in, in->struct_size < sizeof(T) ? in->struct_size : sizeof(T));
  out.struct_size = sizeof(T);
  return ATTN_OK;
}

attn_status null_arg(const char* name) {
  return fail(ATTN_INVALID_ARGUMENT, std::string(name) + " is NULL");
}

attn_status to_run_options(const attn_run_options* in, attn::RunOptions& out) {
  attn_run_options o = ATTN_RUN_OPTIONS_INIT;
  if (attn_status s = read_struct(in, o, "attn_run_options"); s != ATTN_OK) return s;
  if (o.backend < ATTN_BACKEND_TBB || o.backend > ATTN_BACKEND_SERIAL)
    return fail(ATTN_INVALID_ARGUMENT, "attn_run_options.backend is " + std::to_string(o.backend));
  if (o.isa < ATTN_ISA_AUTO || o.isa > ATTN_ISA_AVX512)
    return fail(ATTN_INVALID_ARGUMENT, "attn_run_options.isa is " + std::to_string(o.isa));
  out.backend = static_cast<attn::Backend>(o.backend);
  out.threads = o.threads;
  out.isa = static_cast<attn::Isa>(o.isa);
  out.max_workspace_bytes = o.max_workspace_bytes;
  const std::pair<int32_t, const char*> dtypes[] = {{o.weight_dtype, "weight_dtype"},
                                                    {o.compute_dtype, "compute_dtype"},
                                                    {o.kv_dtype, "kv_dtype"}};
  for (const auto& [value, name] : dtypes) {
    if (value < ATTN_DTYPE_F32 || value > ATTN_DTYPE_INT8)
      return fail(ATTN_INVALID_ARGUMENT,
                  std::string("attn_run_options.") + name + " is " + std::to_string(value));
  }
  out.weight_dtype = static_cast<attn::DType>(o.weight_dtype);
  out.compute_dtype = static_cast<attn::DType>(o.compute_dtype);
  out.kv_dtype = static_cast<attn::DType>(o.kv_dtype);
  return ATTN_OK;
}

attn_status to_layer_config(const attn_layer_config* in, attn::LayerConfig& out) {
  if (in == nullptr) return null_arg("config");
  attn_layer_config c = ATTN_LAYER_CONFIG_INIT;
  if (attn_status s = read_struct(in, c, "attn_layer_config"); s != ATTN_OK) return s;
  if (c.variant < ATTN_VARIANT_SIMPLIFIED || c.variant > ATTN_VARIANT_MULTI_HEAD_ATTENTION)
    return fail(ATTN_INVALID_ARGUMENT, "attn_layer_config.variant is " + std::to_string(c.variant));
  if (c.mask < ATTN_MASK_VARIANT || c.mask > ATTN_MASK_CAUSAL)
    return fail(ATTN_INVALID_ARGUMENT, "attn_layer_config.mask is " + std::to_string(c.mask));
  out.variant = static_cast<attn::Variant>(c.variant);
  out.d_in = c.d_in;
  out.d_out = c.d_out;
  out.num_heads = c.num_heads;
  out.context_length = c.context_length;
  out.qkv_bias = c.qkv_bias != 0;
  out.mask = static_cast<attn::Mask>(c.mask);
  out.window = c.window;
  if (c.rope < ATTN_ROPE_NONE || c.rope > ATTN_ROPE_GPTJ)
    return fail(ATTN_INVALID_ARGUMENT, "attn_layer_config.rope is " + std::to_string(c.rope));
  out.num_kv_heads = c.num_kv_heads;
  out.head_dim = c.head_dim;
  out.scale = c.scale;
  out.rope = static_cast<attn::Rope>(c.rope);
  out.alibi = c.alibi != 0;
  out.rope_theta = c.rope_theta;
  out.rope_dim = c.rope_dim;
  out.softcap = c.softcap;
  return ATTN_OK;
}

// Copies n floats at p into a tensor of `shape` (empty when p is NULL).
attn::Tensor copy_tensor(const float* p, attn::Shape shape) {
  if (p == nullptr) return {};
  const std::int64_t n = shape.numel();
  return attn::Tensor(shape, std::vector<float>(p, p + n));
}

}  // namespace

extern "C" {

uint32_t attn_abi_version(void) { return ATTN_ABI_VERSION; }

const char* attn_version(void) {
  static const std::string version = [] {
    try {
      return attn::runtime_info().version;
    } catch (...) {
      return std::string();
    }
  }();
  return version.c_str();
}

const char* attn_default_isa(void) {
  attn::Result<attn::Isa> isa = attn::resolve_isa(attn::Isa::kAuto);
  return isa.ok() ? attn::to_string(*isa) : "unknown";
}

const char* attn_status_name(attn_status status) {
  return attn::to_string(static_cast<attn::ErrorCode>(status));
}

const char* attn_last_error(void) { return g_last_error.c_str(); }

attn_status attn_engine_create(const attn_layer_config* config, const attn_weights* weights,
                               const attn_run_options* options, attn_engine** engine) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (weights == nullptr) return null_arg("weights");
    attn::LayerConfig c;
    if (attn_status s = to_layer_config(config, c); s != ATTN_OK) return s;
    attn::RunOptions o;
    if (attn_status s = to_run_options(options, o); s != ATTN_OK) return s;
    attn_weights w = ATTN_WEIGHTS_INIT;
    if (attn_status s = read_struct(weights, w, "attn_weights"); s != ATTN_OK) return s;
    // Shapes come from the config; validate them before reading any buffer.
    attn::LayerConfig check = c;
    if (attn::Status s = attn::validate(check); !s.ok()) return from(s);
    const std::int64_t q_dim = check.q_dim(), kv_dim = check.kv_dim();
    attn::Weights ws;
    ws.w_query = copy_tensor(w.w_query, {q_dim, c.d_in});
    ws.w_key = copy_tensor(w.w_key, {kv_dim, c.d_in});
    ws.w_value = copy_tensor(w.w_value, {kv_dim, c.d_in});
    ws.b_query = copy_tensor(w.b_query, {q_dim});
    ws.b_key = copy_tensor(w.b_key, {kv_dim});
    ws.b_value = copy_tensor(w.b_value, {kv_dim});
    ws.w_out = copy_tensor(w.w_out, {c.d_out, q_dim});
    ws.b_out = copy_tensor(w.b_out, {c.d_out});
    attn::Result<attn::Engine> e = attn::Engine::create(c, ws, o);
    if (!e.ok()) return from(e.status());
    *engine = new attn_engine{std::move(e.value())};
    return ATTN_OK;
  });
}

attn_status attn_engine_load(const char* path, const attn_load_options* load,
                             const attn_run_options* options, attn_engine** engine) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (path == nullptr) return null_arg("path");
    attn_load_options l = ATTN_LOAD_OPTIONS_INIT;
    if (attn_status s = read_struct(load, l, "attn_load_options"); s != ATTN_OK) return s;
    attn::RunOptions o;
    if (attn_status s = to_run_options(options, o); s != ATTN_OK) return s;
    attn::io::LayerOptions lo;
    if (l.layout != nullptr) {
      attn::Result<attn::io::Layout> layout = attn::io::parse_layout(l.layout);
      if (!layout.ok()) return from(layout.status());
      lo.layout = *layout;
    }
    if (l.prefix != nullptr) lo.prefix = l.prefix;
    if (l.num_heads != 0) lo.num_heads = l.num_heads;
    if (l.context_length != 0) lo.context_length = l.context_length;
    if (l.causal >= 0) lo.causal = l.causal != 0;
    if (l.rope < -1 || l.rope > ATTN_ROPE_GPTJ)
      return fail(ATTN_INVALID_ARGUMENT, "attn_load_options.rope is " + std::to_string(l.rope));
    if (l.num_kv_heads != 0) lo.num_kv_heads = l.num_kv_heads;
    if (l.head_dim != 0) lo.head_dim = l.head_dim;
    if (l.rope >= 0) lo.rope = static_cast<attn::Rope>(l.rope);
    if (l.alibi >= 0) lo.alibi = l.alibi != 0;
    if (l.rope_theta != 0) lo.rope_theta = l.rope_theta;
    if (l.rope_dim >= 0) lo.rope_dim = l.rope_dim;
    if (l.scale != 0) lo.scale = l.scale;
    if (l.window >= 0) lo.window = l.window;
    if (l.softcap != 0) lo.softcap = l.softcap;
    // 16-bit weights stored in the requested type go to the packed panels without a float32
    // copy.
    if (o.weight_dtype != attn::DType::kF32) lo.keep_16bit = o.weight_dtype;
    attn::Result<attn::io::SafetensorsFile> file = attn::io::SafetensorsFile::open(path);
    if (!file.ok()) return from(file.status());
    attn::Result<attn::io::Layer> layer = attn::io::load_layer(file.value(), lo);
    if (!layer.ok()) return from(layer.status());
    if (layer->config.context_length == 0) {
      return fail(ATTN_INVALID_ARGUMENT, std::string(path) +
                                             ": the file does not give context_length; set "
                                             "attn_load_options.context_length");
    }
    attn::Result<attn::Engine> e = attn::Engine::create(layer->config, layer->weights, o);
    if (!e.ok()) return from(e.status());
    *engine = new attn_engine{std::move(e.value())};
    return ATTN_OK;
  });
}

void attn_engine_free(attn_engine* engine) { delete engine; }

attn_status attn_engine_config(const attn_engine* engine, attn_layer_config* config) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (config == nullptr) return null_arg("config");
    const attn::LayerConfig& c = engine->engine.config();
    attn_layer_config out = ATTN_LAYER_CONFIG_INIT;
    out.variant = static_cast<int32_t>(c.variant);
    out.d_in = c.d_in;
    out.d_out = c.d_out;
    out.num_heads = c.num_heads;
    out.context_length = c.context_length;
    out.qkv_bias = c.qkv_bias ? 1 : 0;
    out.mask = static_cast<int32_t>(c.mask);
    out.window = c.window;
    out.num_kv_heads = c.kv_heads();
    out.head_dim = c.resolved_head_dim();
    out.scale = c.resolved_scale();
    out.rope = static_cast<int32_t>(c.rope);
    out.alibi = c.alibi ? 1 : 0;
    out.rope_theta = c.rope_theta;
    out.rope_dim = c.resolved_rope_dim();
    out.softcap = c.softcap;
    const size_t caller = config->struct_size;
    if (caller < sizeof(size_t))
      return fail(ATTN_INVALID_ARGUMENT, "attn_layer_config.struct_size is too small");
    // Write the fields the caller's struct has, and leave its struct_size as it is.
    const size_t n = caller < sizeof(out) ? caller : sizeof(out);
    std::memcpy(reinterpret_cast<char*>(config) + sizeof(size_t),
                reinterpret_cast<const char*>(&out) + sizeof(size_t), n - sizeof(size_t));
    return ATTN_OK;
  });
}

const char* attn_engine_isa(const attn_engine* engine) {
  return engine == nullptr ? "" : engine->engine.isa();
}

int32_t attn_engine_threads(const attn_engine* engine) {
  return engine == nullptr ? 0 : engine->engine.threads();
}

attn_status attn_forward(const attn_engine* engine, const float* x, int64_t batch, int64_t seq_len,
                         float* out) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (x == nullptr) return null_arg("x");
    if (out == nullptr) return null_arg("out");
    const attn::LayerConfig& c = engine->engine.config();
    return from(engine->engine.forward({x, attn::Shape{batch, seq_len, c.d_in}},
                                       {out, attn::Shape{batch, seq_len, c.d_out}}));
  });
}

attn_status attn_session_new(const attn_engine* engine, attn_session** session) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (session == nullptr) return null_arg("session");
    attn::Result<attn::Session> s = engine->engine.new_session();
    if (!s.ok()) return from(s.status());
    *session = new attn_session{std::move(s.value()), engine->engine.config()};
    return ATTN_OK;
  });
}

attn_status attn_session_prefill(attn_session* session, const float* x, int64_t seq_len,
                                 float* out) {
  return guard([&] {
    if (session == nullptr) return null_arg("session");
    if (x == nullptr) return null_arg("x");
    if (out == nullptr) return null_arg("out");
    const attn::LayerConfig& c = session->config;
    return from(session->session.prefill({x, attn::Shape{seq_len, c.d_in}},
                                         {out, attn::Shape{seq_len, c.d_out}}));
  });
}

attn_status attn_session_step(attn_session* session, const float* x, float* out) {
  return guard([&] {
    if (session == nullptr) return null_arg("session");
    if (x == nullptr) return null_arg("x");
    if (out == nullptr) return null_arg("out");
    const attn::LayerConfig& c = session->config;
    return from(session->session.step({x, attn::Shape{1, c.d_in}}, {out, attn::Shape{1, c.d_out}}));
  });
}

int64_t attn_session_position(const attn_session* session) {
  return session == nullptr ? -1 : session->session.position();
}

void attn_session_reset(attn_session* session) {
  if (session != nullptr) session->session.reset();
}

void attn_session_free(attn_session* session) { delete session; }

attn_status attn_engine_step(const attn_engine* engine, attn_session* const* sessions, int64_t n,
                             const float* x, float* out) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (n < 0) return fail(ATTN_INVALID_ARGUMENT, "n is " + std::to_string(n));
    if (n > 0 && (sessions == nullptr || x == nullptr || out == nullptr))
      return null_arg(sessions == nullptr ? "sessions" : x == nullptr ? "x" : "out");
    std::vector<attn::Session*> list(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (sessions[i] == nullptr)
        return fail(ATTN_INVALID_ARGUMENT, "sessions[" + std::to_string(i) + "] is NULL");
      list[static_cast<size_t>(i)] = &sessions[i]->session;
    }
    const attn::LayerConfig& c = engine->engine.config();
    return from(
        engine->engine.step(list, {x, attn::Shape{n, c.d_in}}, {out, attn::Shape{n, c.d_out}}));
  });
}

attn_status attn_pool_create(const attn_engine* engine, int64_t budget_bytes, attn_pool** pool) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (pool == nullptr) return null_arg("pool");
    if (budget_bytes < 0)
      return fail(ATTN_INVALID_ARGUMENT, "budget_bytes is " + std::to_string(budget_bytes));
    attn::Result<attn::CachePool> p =
        attn::CachePool::create(engine->engine, static_cast<std::size_t>(budget_bytes));
    if (!p.ok()) return from(p.status());
    *pool = new attn_pool{std::move(p.value())};
    return ATTN_OK;
  });
}

void attn_pool_free(attn_pool* pool) { delete pool; }

int64_t attn_pool_block_positions(const attn_pool* pool) {
  return pool == nullptr ? -1 : pool->pool.block_positions();
}

int64_t attn_pool_used_bytes(const attn_pool* pool) {
  return pool == nullptr ? -1 : static_cast<int64_t>(pool->pool.used_bytes());
}

int64_t attn_pool_capacity_bytes(const attn_pool* pool) {
  return pool == nullptr ? -1 : static_cast<int64_t>(pool->pool.capacity_bytes());
}

attn_status attn_session_new_in_pool(const attn_engine* engine, attn_pool* pool,
                                     attn_session** session) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (pool == nullptr) return null_arg("pool");
    if (session == nullptr) return null_arg("session");
    attn::Result<attn::Session> s = engine->engine.new_session(pool->pool);
    if (!s.ok()) return from(s.status());
    *session = new attn_session{std::move(s.value()), engine->engine.config()};
    return ATTN_OK;
  });
}

attn_status attn_session_fork(const attn_session* session, attn_session** fork) {
  return guard([&] {
    if (session == nullptr) return null_arg("session");
    if (fork == nullptr) return null_arg("fork");
    attn::Result<attn::Session> s = session->session.fork();
    if (!s.ok()) return from(s.status());
    *fork = new attn_session{std::move(s.value()), session->config};
    return ATTN_OK;
  });
}

void attn_session_release(attn_session* session) {
  if (session != nullptr) session->session.release();
}

attn_status attn_engine_advance(const attn_engine* engine, attn_session* const* sessions,
                                const int64_t* new_tokens, int64_t n, const float* x, float* out) {
  return guard([&] {
    if (engine == nullptr) return null_arg("engine");
    if (n < 0) return fail(ATTN_INVALID_ARGUMENT, "n is " + std::to_string(n));
    if (n > 0 && (sessions == nullptr || new_tokens == nullptr || x == nullptr || out == nullptr))
      return null_arg(sessions == nullptr     ? "sessions"
                      : new_tokens == nullptr ? "new_tokens"
                      : x == nullptr          ? "x"
                                              : "out");
    std::vector<attn::Session*> list(static_cast<size_t>(n));
    std::vector<std::int64_t> tokens(static_cast<size_t>(n));
    std::int64_t rows = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (sessions[i] == nullptr)
        return fail(ATTN_INVALID_ARGUMENT, "sessions[" + std::to_string(i) + "] is NULL");
      if (new_tokens[i] < 1 || new_tokens[i] > (std::int64_t{1} << 40)) {
        return fail(ATTN_INVALID_ARGUMENT, "new_tokens[" + std::to_string(i) + "] is " +
                                               std::to_string(new_tokens[i]) + " (must be >= 1)");
      }
      list[static_cast<size_t>(i)] = &sessions[i]->session;
      tokens[static_cast<size_t>(i)] = new_tokens[i];
      rows += new_tokens[i];
    }
    const attn::LayerConfig& c = engine->engine.config();
    return from(engine->engine.advance(list, tokens, {x, attn::Shape{rows, c.d_in}},
                                       {out, attn::Shape{rows, c.d_out}}));
  });
}

}  // extern "C"
