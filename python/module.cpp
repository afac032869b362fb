// The `attn` Python module: the chapter's attention classes with the chapter's constructor
// signatures, run by attn::Engine; attn.load for safetensors files; KV-cache sessions.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>

#include "attn/cache_pool.hpp"
#include "attn/runtime.hpp"
#include "layer.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace attn::python {
namespace {

constexpr const char* kCallDoc =
    "layer(x) -> same kind as x. x: [batch, seq_len, d_in] or [seq_len, d_in], a numpy.ndarray\n"
    "or a CPU torch.Tensor of float32. C-contiguous input is used in place (no copy); other\n"
    "strides are copied once; other dtypes raise TypeError. The GIL is released while the\n"
    "engine runs. Errors (shape, seq_len > context_length) raise ValueError. out (optional):\n"
    "a C-contiguous float32 array or tensor of the output's shape, written and returned.";

void check_dropout(double dropout) {
  if (dropout < 0.0 || dropout > 1.0)
    throw py::value_error("dropout probability has to be between 0 and 1, but got " +
                          std::to_string(dropout));
}

EngineOptions engine_options(int threads, const std::string& backend, const std::string& isa,
                             std::int64_t max_workspace_bytes, const DTypeNames& dtypes,
                             std::optional<std::uint64_t> seed) {
  return {run_options(threads, backend, isa, max_workspace_bytes, dtypes), seed};
}

// The keyword-only options every chapter class takes, after its own arguments.
#define ATTN_ENGINE_KWARGS                                                                         \
  py::kw_only(), "threads"_a = 0, "backend"_a = "tbb", "isa"_a = "auto",                           \
                 "max_workspace_bytes"_a = 0, "weight_dtype"_a = "f32", "compute_dtype"_a = "f32", \
                 "kv_dtype"_a = "f32", "seed"_a = py::none()

// The layer settings beyond the chapter's that attn.load takes (io::LayerOptions' fields).
struct LayerKwargs {
  std::optional<std::int64_t> num_kv_heads, head_dim, rope_dim, window;
  std::optional<std::string> rope;
  std::optional<double> rope_theta, scale, softcap;
  std::optional<bool> alibi;
};

std::shared_ptr<Layer> load(const std::string& path, std::optional<std::string> prefix,
                            std::optional<std::string> layout,
                            std::optional<std::int64_t> num_heads,
                            std::optional<std::int64_t> context_length, std::optional<bool> causal,
                            const LayerKwargs& more, int threads, const std::string& backend,
                            const std::string& isa, std::int64_t max_workspace_bytes,
                            const DTypeNames& dtypes) {
  const RunOptions run = run_options(threads, backend, isa, max_workspace_bytes, dtypes);
  io::LayerOptions lo;
  if (layout) {
    Result<io::Layout> l = io::parse_layout(*layout);
    if (!l.ok()) raise(l.status());
    lo.layout = *l;
  }
  lo.prefix = prefix.value_or("");
  lo.num_heads = num_heads;
  lo.context_length = context_length;
  lo.causal = causal;
  lo.num_kv_heads = more.num_kv_heads;
  lo.head_dim = more.head_dim;
  lo.rope_dim = more.rope_dim;
  lo.window = more.window;
  if (more.rope) {
    Result<attn::Rope> r = attn::parse_rope(*more.rope);
    if (!r.ok())
      raise(Status(ErrorCode::kInvalidArgument,
                   "rope='" + *more.rope + "': expected none, neox or gptj"));
    lo.rope = *r;
  }
  lo.rope_theta = more.rope_theta;
  lo.scale = more.scale;
  if (more.softcap && !(*more.softcap > 0 && std::isfinite(*more.softcap))) {
    raise(Status(ErrorCode::kInvalidArgument,
                 "softcap=" + std::string(py::str(py::float_(*more.softcap))) +
                     ": expected a finite number > 0 (leave it None for no soft-capping)"));
  }
  lo.softcap = more.softcap;
  lo.alibi = more.alibi;
  // 16-bit weights stored in weight_dtype's type reach the packed panels without a float32
  // copy; the layer keeps them as they are (state_dict() widens them).
  if (run.weight_dtype != attn::DType::kF32) lo.keep_16bit = run.weight_dtype;
  Result<io::Layer> layer = [&] {
    py::gil_scoped_release release;
    Result<io::SafetensorsFile> file = io::SafetensorsFile::open(path);
    if (!file.ok()) return Result<io::Layer>(file.status());
    return io::load_layer(file.value(), lo);
  }();
  if (!layer.ok()) raise(layer.status());
  if (layer->config.context_length == 0) {
    raise(Status(ErrorCode::kInvalidArgument,
                 path + ": the file does not give context_length; pass context_length=..."));
  }
  return make_layer(layer->config, run, std::move(layer->weights));
}

}  // namespace
}  // namespace attn::python

PYBIND11_MODULE(attn, m) {
  using namespace attn::python;
  using attn::LayerConfig;
  using attn::Variant;
  m.doc() =
      "attn: the attention layers of chapter 3 of 'Build a Large Language Model (From "
      "Scratch)', run by a SIMD CPU engine. Inference only: dropout is accepted and not "
      "applied (as in eval() mode).";
  m.attr("__version__") = attn::runtime_info().version;

  py::class_<PySession, std::shared_ptr<PySession>>(
      m, "Session", "A KV-cache session of one causal layer (layer.new_session()).")
      .def("prefill", &PySession::prefill, "x"_a,
           "Appends a prompt. x: [tokens, d_in] -> [tokens, d_out], same kind as x.")
      .def("step", &PySession::step, "x"_a,
           "Appends one token. x: [1, d_in] (or [d_in]) -> [1, d_out] (or [d_out]).")
      .def("reset", &PySession::reset, "Forgets every cached position (its blocks go back).")
      .def("release", &PySession::release,
           "Gives the session's cache blocks back to its pool (position 0).")
      .def("fork", &PySession::fork,
           "Returns a new session with these positions, sharing the full cache blocks\n"
           "copy-on-write (a shared prompt); each then grows on its own.")
      .def_property_readonly("cache_bytes", &PySession::cache_bytes,
                             "Bytes of cache set aside: a private pool's capacity, or the\n"
                             "bytes of the blocks held in a shared pool.")
      .def_property_readonly("position", &PySession::position, "Positions cached so far.")
      .def_property_readonly("capacity", &PySession::capacity, "context_length.");

  py::class_<attn::CachePool>(m, "CachePool",
                              "A budget of KV-cache memory in blocks, shared by sessions\n"
                              "(layer.new_session(pool)).")
      .def(py::init([](const std::shared_ptr<Layer>& layer, std::int64_t budget_bytes) {
             if (budget_bytes < 0) throw py::value_error("budget_bytes must be >= 0");
             attn::Result<attn::CachePool> p =
                 attn::CachePool::create(layer->engine(), static_cast<std::size_t>(budget_bytes));
             if (!p.ok()) raise(p.status());
             return std::move(p.value());
           }),
           "layer"_a, "budget_bytes"_a)
      .def_property_readonly("block_positions", &attn::CachePool::block_positions)
      .def_property_readonly("block_bytes", &attn::CachePool::block_bytes)
      .def_property_readonly("capacity_bytes", &attn::CachePool::capacity_bytes)
      .def_property_readonly("used_bytes", &attn::CachePool::used_bytes)
      .def_property_readonly("peak_used_bytes", &attn::CachePool::peak_used_bytes);

  py::class_<Layer, std::shared_ptr<Layer>>(m, "Layer", "An attention layer run by attn.")
      .def("__call__", &Layer::forward, "x"_a, "out"_a = py::none(), kCallDoc)
      .def("forward", &Layer::forward, "x"_a, "out"_a = py::none(), kCallDoc)
      .def("load_state_dict", &Layer::load_state_dict, "state_dict"_a, "prefix"_a = "",
           "Replaces the weights with a state dict's (dict of torch tensors or numpy arrays):\n"
           "the chapter's names (W_query.weight, heads.{i}.W_query.weight, out_proj.*, mask),\n"
           "nn.MultiheadAttention's (in_proj_weight, in_proj_bias, out_proj.*) or GPT-2's\n"
           "([attn.]c_attn.*, c_proj.*). Raises ValueError when they do not fit the layer.")
      .def("state_dict", &Layer::state_dict,
           "Returns the parameters and mask buffer under the chapter's names, as numpy arrays.")
      .def(
          "new_session",
          [](const std::shared_ptr<Layer>& self, std::optional<attn::CachePool> pool) {
            attn::Result<attn::Session> s =
                pool ? self->engine().new_session(*pool) : self->engine().new_session();
            if (!s.ok()) raise(s.status());
            return std::make_shared<PySession>(std::move(s.value()), self->config());
          },
          "pool"_a = py::none(),
          "Returns a KV-cache session (causal layers only): with a private cache of\n"
          "context_length positions, or taking blocks from `pool` (an attn.CachePool) as it\n"
          "grows.")
      .def("advance", &advance, "sessions"_a, "xs"_a,
           "Advances sessions[i] by the rows of xs[i] ([n_i, d_in], n_i >= 1) in one ragged\n"
           "call (prompt chunks and single tokens mixed; all-or-nothing) and returns the\n"
           "outputs [n_i, d_out] in order.")
      .def(
          "eval", [](const py::object& self) { return self; }, "Returns self (always inference).")
      .def_property_readonly("d_in", [](const Layer& l) { return l.config().d_in; })
      .def_property_readonly(
          "d_out", [](const Layer& l) { return l.config().d_out; },
          "Output features (all heads together).")
      .def_property_readonly("num_heads", [](const Layer& l) { return l.config().num_heads; })
      .def_property_readonly("head_dim",
                             [](const Layer& l) { return l.config().resolved_head_dim(); })
      .def_property_readonly("context_length",
                             [](const Layer& l) { return l.config().context_length; })
      .def_property_readonly("qkv_bias", [](const Layer& l) { return l.config().qkv_bias; })
      .def_property_readonly("causal", [](const Layer& l) { return l.config().causal(); })
      .def_property_readonly("num_kv_heads", [](const Layer& l) { return l.config().kv_heads(); })
      .def_property_readonly("rope",
                             [](const Layer& l) { return std::string(to_string(l.config().rope)); })
      .def_property_readonly("rope_theta", [](const Layer& l) { return l.config().rope_theta; })
      .def_property_readonly("rope_dim",
                             [](const Layer& l) { return l.config().resolved_rope_dim(); })
      .def_property_readonly("scale", [](const Layer& l) { return l.config().resolved_scale(); })
      .def_property_readonly("window", [](const Layer& l) { return l.config().window; })
      .def_property_readonly("alibi", [](const Layer& l) { return l.config().alibi; })
      .def_property_readonly("softcap", [](const Layer& l) { return l.config().softcap; })
      .def_property_readonly(
          "weight_dtype",
          [](const Layer& l) { return std::string(to_string(l.engine().options().weight_dtype)); },
          "Storage of the packed projection weights: 'f32', 'bf16' or 'f16'.")
      .def_property_readonly("isa", [](const Layer& l) { return std::string(l.engine().isa()); })
      .def_property_readonly("threads", [](const Layer& l) { return l.engine().threads(); })
      .def("__repr__", &Layer::repr);

  py::class_<SelfAttentionV1, Layer, std::shared_ptr<SelfAttentionV1>>(
      m, "SelfAttention_v1", "Section 3.4: q = x W_query with W of shape [d_in, d_out].")
      .def(py::init([](std::int64_t d_in, std::int64_t d_out, std::int64_t context_length,
                       int threads, const std::string& backend, const std::string& isa,
                       std::int64_t max_ws, const std::string& weight_dtype,
                       const std::string& compute_dtype, const std::string& kv_dtype,
                       std::optional<std::uint64_t> seed) {
             LayerConfig c =
                 LayerConfig::chapter(Variant::kSelfAttentionV1, d_in, d_out, 1, context_length);
             return std::static_pointer_cast<SelfAttentionV1>(make_seeded_layer(
                 c, engine_options(threads, backend, isa, max_ws,
                                   {weight_dtype, compute_dtype, kv_dtype}, seed)));
           }),
           "d_in"_a, "d_out"_a, py::kw_only(), "context_length"_a = 1024, "threads"_a = 0,
           "backend"_a = "tbb", "isa"_a = "auto", "max_workspace_bytes"_a = 0,
           "weight_dtype"_a = "f32", "compute_dtype"_a = "f32", "kv_dtype"_a = "f32",
           "seed"_a = py::none());

  py::class_<SelfAttentionV2, Layer, std::shared_ptr<SelfAttentionV2>>(
      m, "SelfAttention_v2", "Section 3.4: nn.Linear projections, no mask.")
      .def(py::init([](std::int64_t d_in, std::int64_t d_out, bool qkv_bias,
                       std::int64_t context_length, int threads, const std::string& backend,
                       const std::string& isa, std::int64_t max_ws, const std::string& weight_dtype,
                       const std::string& compute_dtype, const std::string& kv_dtype,
                       std::optional<std::uint64_t> seed) {
             LayerConfig c =
                 LayerConfig::chapter(Variant::kSelfAttentionV2, d_in, d_out, 1, context_length);
             c.qkv_bias = qkv_bias;
             return std::static_pointer_cast<SelfAttentionV2>(make_seeded_layer(
                 c, engine_options(threads, backend, isa, max_ws,
                                   {weight_dtype, compute_dtype, kv_dtype}, seed)));
           }),
           "d_in"_a, "d_out"_a, "qkv_bias"_a = false, py::kw_only(), "context_length"_a = 1024,
           "threads"_a = 0, "backend"_a = "tbb", "isa"_a = "auto", "max_workspace_bytes"_a = 0,
           "weight_dtype"_a = "f32", "compute_dtype"_a = "f32", "kv_dtype"_a = "f32",
           "seed"_a = py::none());

  py::class_<CausalAttention, Layer, std::shared_ptr<CausalAttention>>(
      m, "CausalAttention", "Section 3.5: v2 with the causal mask (dropout not applied).")
      .def(py::init([](std::int64_t d_in, std::int64_t d_out, std::int64_t context_length,
                       double dropout, bool qkv_bias, int threads, const std::string& backend,
                       const std::string& isa, std::int64_t max_ws, const std::string& weight_dtype,
                       const std::string& compute_dtype, const std::string& kv_dtype,
                       std::optional<std::uint64_t> seed) {
             check_dropout(dropout);
             LayerConfig c =
                 LayerConfig::chapter(Variant::kCausalAttention, d_in, d_out, 1, context_length);
             c.qkv_bias = qkv_bias;
             return std::static_pointer_cast<CausalAttention>(make_seeded_layer(
                 c, engine_options(threads, backend, isa, max_ws,
                                   {weight_dtype, compute_dtype, kv_dtype}, seed)));
           }),
           "d_in"_a, "d_out"_a, "context_length"_a, "dropout"_a, "qkv_bias"_a = false,
           ATTN_ENGINE_KWARGS);

  py::class_<MultiHeadAttentionWrapper, Layer, std::shared_ptr<MultiHeadAttentionWrapper>>(
      m, "MultiHeadAttentionWrapper",
      "Section 3.6.1: num_heads CausalAttention heads of d_out features each, concatenated\n"
      "(output: num_heads * d_out features).")
      .def(
          py::init([](std::int64_t d_in, std::int64_t d_out, std::int64_t context_length,
                      double dropout, std::int64_t num_heads, bool qkv_bias, int threads,
                      const std::string& backend, const std::string& isa, std::int64_t max_ws,
                      const std::string& weight_dtype, const std::string& compute_dtype,
                      const std::string& kv_dtype, std::optional<std::uint64_t> seed) {
            check_dropout(dropout);
            if (num_heads <= 0)
              throw py::value_error("num_heads must be positive, got " + std::to_string(num_heads));
            // The chapter's d_out is per head; the engine's is the total width.
            LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadWrapper, d_in,
                                                 d_out * num_heads, num_heads, context_length);
            c.qkv_bias = qkv_bias;
            return std::static_pointer_cast<MultiHeadAttentionWrapper>(make_seeded_layer(
                c, engine_options(threads, backend, isa, max_ws,
                                  {weight_dtype, compute_dtype, kv_dtype}, seed)));
          }),
          "d_in"_a, "d_out"_a, "context_length"_a, "dropout"_a, "num_heads"_a, "qkv_bias"_a = false,
          ATTN_ENGINE_KWARGS);

  py::class_<MultiHeadAttention, Layer, std::shared_ptr<MultiHeadAttention>>(
      m, "MultiHeadAttention",
      "Section 3.6.2: weight splits, head_dim = d_out / num_heads, out_proj.")
      .def(py::init([](std::int64_t d_in, std::int64_t d_out, std::int64_t context_length,
                       double dropout, std::int64_t num_heads, bool qkv_bias, int threads,
                       const std::string& backend, const std::string& isa, std::int64_t max_ws,
                       const std::string& weight_dtype, const std::string& compute_dtype,
                       const std::string& kv_dtype, std::optional<std::uint64_t> seed) {
             check_dropout(dropout);
             LayerConfig c = LayerConfig::chapter(Variant::kMultiHeadAttention, d_in, d_out,
                                                  num_heads, context_length);
             c.qkv_bias = qkv_bias;
             return std::static_pointer_cast<MultiHeadAttention>(make_seeded_layer(
                 c, engine_options(threads, backend, isa, max_ws,
                                   {weight_dtype, compute_dtype, kv_dtype}, seed)));
           }),
           "d_in"_a, "d_out"_a, "context_length"_a, "dropout"_a, "num_heads"_a,
           "qkv_bias"_a = false, ATTN_ENGINE_KWARGS);

  m.def(
      "load",
      [](const std::string& path, std::optional<std::string> prefix,
         std::optional<std::string> layout, std::optional<std::int64_t> num_heads,
         std::optional<std::int64_t> context_length, std::optional<bool> causal,
         std::optional<std::int64_t> num_kv_heads, std::optional<std::int64_t> head_dim,
         std::optional<std::string> rope, std::optional<double> rope_theta,
         std::optional<std::int64_t> rope_dim, std::optional<double> scale,
         std::optional<std::int64_t> window, std::optional<bool> alibi,
         std::optional<double> softcap, int threads, const std::string& backend,
         const std::string& isa, std::int64_t max_workspace_bytes, const std::string& weight_dtype,
         const std::string& compute_dtype, const std::string& kv_dtype) {
        const LayerKwargs more{num_kv_heads, head_dim, rope_dim, window, rope,
                               rope_theta,   scale,    softcap,  alibi};
        return load(path, prefix, layout, num_heads, context_length, causal, more, threads, backend,
                    isa, max_workspace_bytes, {weight_dtype, compute_dtype, kv_dtype});
      },
      "path"_a, "prefix"_a = py::none(), py::kw_only(), "layout"_a = py::none(),
      "num_heads"_a = py::none(), "context_length"_a = py::none(), "causal"_a = py::none(),
      "num_kv_heads"_a = py::none(), "head_dim"_a = py::none(), "rope"_a = py::none(),
      "rope_theta"_a = py::none(), "rope_dim"_a = py::none(), "scale"_a = py::none(),
      "window"_a = py::none(), "alibi"_a = py::none(), "softcap"_a = py::none(), "threads"_a = 0,
      "backend"_a = "tbb", "isa"_a = "auto", "max_workspace_bytes"_a = 0, "weight_dtype"_a = "f32",
      "compute_dtype"_a = "f32", "kv_dtype"_a = "f32",
      "Reads the attention layer under `prefix` of a safetensors file (the chapter's classes,\n"
      "nn.MultiheadAttention, GPT-2, Hugging Face Llama/Mistral/Qwen2/Gemma 2 or GPT-NeoX/BLOOM\n"
      "attention) and returns it as its chapter class (MultiHeadAttention for the others).\n"
      "Layer options override what the file says (its __metadata__ and shapes). weight_dtype\n"
      "'bf16' or 'f16' packs the projection weights in 16 bits (half the memory; see\n"
      "docs/precision.md for the error). Raises OSError (file) or ValueError (contents, or a\n"
      "dtype this build cannot run).");
  m.def(
      "default_isa",
      [] {
        attn::Result<attn::Isa> isa = attn::resolve_isa(attn::Isa::kAuto);
        if (!isa.ok()) raise(isa.status());
        return std::string(attn::to_string(*isa));
      },
      "Returns the instruction set layers use by default ('sse2', 'avx2', 'avx512').");
}
