// The Python layer and session: array conversions (numpy and torch, no copy for contiguous
// float32), the GIL released around the engine, and state dicts mapped through attn::io.
#include "layer.hpp"

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/state_dict.hpp"

namespace attn::python {
namespace {

// An input as the engine sees it, plus what to give back.
using CArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

struct Input {
  CArray array;        // C-contiguous float32 (the caller's memory when it already was)
  bool torch = false;  // wrap the output with torch.from_numpy
};

// Returns torch.Tensor when torch has been imported, else None (never imports torch).
py::object torch_tensor_type() {
  static py::object cached;
  if (cached) return cached;
  py::dict modules = py::module_::import("sys").attr("modules");
  if (!modules.contains("torch")) return py::none();
  cached = modules["torch"].attr("Tensor");
  return cached;
}

bool is_torch(const py::handle& x) {
  py::object t = torch_tensor_type();
  return !t.is_none() && py::isinstance(x, t);
}

[[noreturn]] void type_error(const std::string& message) { throw py::type_error(message); }

// Accepts a numpy array or a torch tensor of float32: contiguous ones are used in place,
// others are copied once into a contiguous array. Other dtypes are refused (TypeError).
Input to_input(const py::object& x, const char* what) {
  Input in;
  py::object arr = x;
  if (is_torch(x)) {
    in.torch = true;
    const std::string dtype = py::str(x.attr("dtype"));
    if (dtype != "torch.float32")
      type_error(std::string(what) + " must be float32, got " + dtype + " (use x.float())");
    const std::string device = py::str(x.attr("device").attr("type"));
    if (device != "cpu")
      throw py::value_error(std::string(what) + " is on " + device + ", not the CPU");
    arr = x.attr("detach")().attr("numpy")();  // a view sharing the tensor's memory and strides
  } else if (!py::isinstance<py::array>(x)) {
    type_error(std::string(what) + " must be a numpy.ndarray or torch.Tensor, got " +
               std::string(py::str(x.get_type().attr("__name__"))));
  }
  py::array a = py::reinterpret_borrow<py::array>(arr);
  if (!py::isinstance<py::array_t<float>>(a))
    type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())) +
               " (use x.astype(numpy.float32))");
  // array_t's check accepts C-contiguous float32 without a copy; anything else is copied once.
  in.array = CArray::ensure(a);
  if (!in.array) throw py::error_already_set();
  return in;
}

Shape shape_of(const py::array& a) {
  std::vector<std::int64_t> dims(a.shape(), a.shape() + a.ndim());
  return Shape(std::span<const std::int64_t>(dims));
}

py::object wrap(py::array_t<float> out, bool torch) {
  if (!torch) return out;
  return py::module_::import("torch").attr("from_numpy")(out);
}

Engine create_engine(const LayerConfig& config, const Weights& weights, const RunOptions& options) {
  Result<Engine> e = Engine::create(config, weights, options);
  if (!e.ok()) raise(e.status());
  return std::move(e.value());
}

// Converts one state-dict value to a C-contiguous float32 numpy array (a copy when needed).
py::array_t<float> to_float_array(const py::handle& value, const std::string& name) {
  py::object v = py::reinterpret_borrow<py::object>(value);
  if (is_torch(v)) v = v.attr("detach")().attr("cpu")().attr("float")().attr("numpy")();
  py::module_ np = py::module_::import("numpy");
  try {
    return np.attr("ascontiguousarray")(v, "float32").cast<py::array_t<float>>();
  } catch (py::error_already_set& e) {
    throw py::value_error("state dict entry '" + name + "' is not a numeric array: " + e.what());
  }
}

// The float32 values of `t`: t itself, or its widened copy in `tmp` (a 16-bit weight kept
// from a file by load(..., weight_dtype=...); widening is exact).
const Tensor& as_f32(const Tensor& t, Tensor& tmp) {
  if (t.dtype() == attn::DType::kF32) return t;
  tmp = t.to_f32();
  return tmp;
}

py::array_t<float> numpy_of(const Tensor& t16) {
  Tensor tmp;
  const Tensor& t = as_f32(t16, tmp);
  std::vector<py::ssize_t> dims;
  for (int i = 0; i < t.shape().rank(); ++i) dims.push_back(t.shape()[i]);
  py::array_t<float> a(dims);
  std::copy(t.values().begin(), t.values().end(), a.mutable_data());
  return a;
}

py::array_t<float> transposed(const Tensor& t16) {
  Tensor tmp;
  const Tensor& t = as_f32(t16, tmp);
  const std::int64_t r = t.shape()[0], c = t.shape()[1];
  py::array_t<float> a({c, r});
  float* p = a.mutable_data();
  for (std::int64_t i = 0; i < r; ++i)
    for (std::int64_t j = 0; j < c; ++j) p[j * r + i] = t.data()[i * c + j];
  return a;
}

py::array_t<float> rows(const Tensor& t16, std::int64_t row0, std::int64_t n) {
  Tensor tmp;
  const Tensor& t = as_f32(t16, tmp);
  const std::int64_t c = t.shape().rank() == 2 ? t.shape()[1] : 1;
  py::array_t<float> a = t.shape().rank() == 2 ? py::array_t<float>({n, c}) : py::array_t<float>(n);
  std::copy(t.data() + row0 * c, t.data() + (row0 + n) * c, a.mutable_data());
  return a;
}

// The chapter's mask buffer: triu(ones(n, n), diagonal=1).
py::array_t<float> causal_mask(std::int64_t n) {
  py::array_t<float> a({n, n});
  float* p = a.mutable_data();
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) p[i * n + j] = j > i ? 1.0f : 0.0f;
  return a;
}

// The file layouts a class accepts in load_state_dict (the chapter's own first).
bool accepts(Variant v, io::Layout l) {
  using io::Layout;
  switch (v) {
    case Variant::kSelfAttentionV1:
      return l == Layout::kSelfAttentionV1;
    case Variant::kSelfAttentionV2:
      return l == Layout::kSelfAttentionV2;
    case Variant::kCausalAttention:  // a v2 state dict is CausalAttention's without its mask
      return l == Layout::kCausalAttention || l == Layout::kSelfAttentionV2;
    case Variant::kMultiHeadWrapper:
      return l == Layout::kMultiHeadWrapper;
    case Variant::kMultiHeadAttention:
      return l == Layout::kMultiHeadAttention || l == Layout::kTorchMultiheadAttention ||
             l == Layout::kGpt2;
    case Variant::kSimplified:
      return false;
  }
  return false;
}

}  // namespace

[[noreturn]] void raise(const Status& s) {
  PyObject* type = PyExc_ValueError;
  if (s.code() == ErrorCode::kResourceExhausted) type = PyExc_MemoryError;
  if (s.code() == ErrorCode::kIoError) type = PyExc_OSError;
  PyErr_SetString(type, s.message().c_str());
  throw py::error_already_set();
}

RunOptions run_options(int threads, const std::string& backend, const std::string& isa,
                       std::int64_t max_workspace_bytes, const DTypeNames& dtypes) {
  RunOptions o;
  // The keyword's name first: parse_dtype's message names the value, not the setting.
  const auto dtype = [](const char* kwarg, const std::string& name) {
    Result<DType> d = parse_dtype(name);
    if (!d.ok()) raise(Status(d.status().code(), std::string(kwarg) + ": " + d.status().message()));
    return *d;
  };
  o.weight_dtype = dtype("weight_dtype", dtypes.weight);
  o.compute_dtype = dtype("compute_dtype", dtypes.compute);
  o.kv_dtype = dtype("kv_dtype", dtypes.kv);
  Result<Backend> b = parse_backend(backend);
  if (!b.ok()) raise(b.status());
  Result<Isa> i = parse_isa(isa);
  if (!i.ok()) raise(i.status());
  o.backend = *b;
  o.isa = *i;
  o.threads = threads;
  o.max_workspace_bytes = max_workspace_bytes;
  if (Status s = validate(o); !s.ok()) raise(s);
  return o;
}

Layer::Layer(const LayerConfig& config, const RunOptions& options, Weights weights)
    : config_(config),
      options_(options),
      weights_(std::move(weights)),
      engine_(create_engine(config_, weights_, options_)) {}

py::object Layer::forward(const py::object& x, const py::object& out_arg) const {
  Input in = to_input(x, "x");
  const int rank = static_cast<int>(in.array.ndim());
  if (rank != 2 && rank != 3) {
    throw py::value_error("x must be [batch, seq_len, d_in] or [seq_len, d_in], got rank " +
                          std::to_string(rank) + " " + shape_of(in.array).to_string());
  }
  std::vector<py::ssize_t> dims(in.array.shape(), in.array.shape() + rank);
  dims.back() = config_.d_out;
  py::array_t<float> out;
  if (out_arg.is_none()) {
    out = py::array_t<float>(dims);
  } else {
    // A caller's buffer is written in place (no allocation per call): it must already be
    // what the engine writes.
    py::object o = is_torch(out_arg) ? out_arg.attr("detach")().attr("numpy")() : out_arg;
    if (!py::isinstance<py::array_t<float, py::array::c_style>>(o))
      type_error("out must be a C-contiguous float32 numpy.ndarray or torch.Tensor");
    out = py::reinterpret_borrow<py::array_t<float>>(o);
    if (!out.writeable()) throw py::value_error("out is read-only");
    if (out.ndim() != rank || !std::equal(dims.begin(), dims.end(), out.shape()))
      throw py::value_error(
          "out has shape " + shape_of(out).to_string() + ", expected " +
          Shape(std::span<const std::int64_t>(std::vector<std::int64_t>(dims.begin(), dims.end())))
              .to_string());
  }
  const ConstTensorView xv{in.array.data(), shape_of(in.array)};
  const TensorView ov{out.mutable_data(), shape_of(out)};
  const Engine engine = engine_;  // a copy shares the state; load_state_dict may swap engine_
  Status s;
  {
    py::gil_scoped_release release;
    s = engine.forward(xv, ov);
  }
  if (!s.ok()) raise(s);
  if (!out_arg.is_none()) return out_arg;
  return wrap(std::move(out), in.torch);
}

void Layer::load_state_dict(const py::handle& state_dict, const std::string& prefix) {
  if (!py::isinstance<py::dict>(state_dict) && !py::hasattr(state_dict, "items"))
    type_error("load_state_dict takes a dict of tensors or arrays");
  std::vector<std::string> names;
  std::vector<py::array_t<float>> arrays;
  for (py::handle item : state_dict.attr("items")()) {
    py::tuple kv = py::reinterpret_borrow<py::tuple>(item);
    names.push_back(py::str(kv[0]));
    arrays.push_back(to_float_array(kv[1], names.back()));
  }
  std::vector<io::NamedTensor> tensors;
  for (std::size_t i = 0; i < names.size(); ++i) {
    tensors.push_back({names[i], ConstTensorView{arrays[i].data(), shape_of(arrays[i])}});
  }
  io::LayerOptions lo;
  lo.prefix = prefix;
  lo.context_length = config_.context_length;
  lo.num_heads = config_.num_heads;
  const auto load = [&](const io::LayerOptions& options) {
    py::gil_scoped_release release;
    return io::load_layer_from_tensors(tensors, options, "state_dict");
  };
  const auto wrong_layout = [&](io::Layout layout) {
    return py::value_error(std::string("state_dict: holds a '") + io::to_string(layout) +
                           "' layer, which " + class_name() + " cannot load");
  };
  Result<io::Layer> loaded = load(lo);
  if (!loaded.ok()) {
    // A layer of another class fails on the head count first; name the layouts instead.
    io::LayerOptions any = lo;
    any.num_heads.reset();
    any.context_length.reset();
    if (Result<io::Layer> other = load(any);
        other.ok() && !accepts(config_.variant, other->location.layout))
      throw wrong_layout(other->location.layout);
    raise(loaded.status());
  }
  const io::Layout layout = loaded->location.layout;
  if (!accepts(config_.variant, layout)) throw wrong_layout(layout);
  const LayerConfig& got = loaded->config;
  if (got.d_in != config_.d_in || got.d_out != config_.d_out) {
    throw py::value_error("state_dict: its layer maps d_in " + std::to_string(got.d_in) +
                          " to d_out " + std::to_string(got.d_out) + "; this " + class_name() +
                          " maps " + std::to_string(config_.d_in) + " to " +
                          std::to_string(config_.d_out) + " (all heads)");
  }
  if (got.qkv_bias != config_.qkv_bias) {
    throw py::value_error(std::string("state_dict: ") +
                          (got.qkv_bias ? "has query/key/value biases but the layer was created "
                                          "with qkv_bias=False"
                                        : "has no query/key/value biases but the layer was "
                                          "created with qkv_bias=True"));
  }
  Engine fresh = create_engine(config_, loaded->weights, options_);
  weights_ = std::move(loaded->weights);
  engine_ = std::move(fresh);
}

py::dict Layer::state_dict() const {
  py::dict sd;
  const Weights& w = weights_;
  const std::int64_t heads = config_.num_heads, head_dim = config_.resolved_head_dim();
  switch (config_.variant) {
    case Variant::kSimplified:
      break;
    case Variant::kSelfAttentionV1:
      sd["W_query"] = transposed(w.w_query);
      sd["W_key"] = transposed(w.w_key);
      sd["W_value"] = transposed(w.w_value);
      break;
    case Variant::kMultiHeadWrapper:
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::string p = "heads." + std::to_string(h) + ".";
        const std::int64_t r0 = h * head_dim;
        sd[py::str(p + "mask")] = causal_mask(config_.context_length);
        sd[py::str(p + "W_query.weight")] = rows(w.w_query, r0, head_dim);
        if (config_.qkv_bias) sd[py::str(p + "W_query.bias")] = rows(w.b_query, r0, head_dim);
        sd[py::str(p + "W_key.weight")] = rows(w.w_key, r0, head_dim);
        if (config_.qkv_bias) sd[py::str(p + "W_key.bias")] = rows(w.b_key, r0, head_dim);
        sd[py::str(p + "W_value.weight")] = rows(w.w_value, r0, head_dim);
        if (config_.qkv_bias) sd[py::str(p + "W_value.bias")] = rows(w.b_value, r0, head_dim);
      }
      break;
    default:  // v2, causal, multi-head: own buffers first, then children (as torch orders them)
      if (config_.variant != Variant::kSelfAttentionV2)
        sd["mask"] = causal_mask(config_.context_length);
      sd["W_query.weight"] = numpy_of(w.w_query);
      if (config_.qkv_bias) sd["W_query.bias"] = numpy_of(w.b_query);
      sd["W_key.weight"] = numpy_of(w.w_key);
      if (config_.qkv_bias) sd["W_key.bias"] = numpy_of(w.b_key);
      sd["W_value.weight"] = numpy_of(w.w_value);
      if (config_.qkv_bias) sd["W_value.bias"] = numpy_of(w.b_value);
      if (config_.has_out_proj()) {
        sd["out_proj.weight"] = numpy_of(w.w_out);
        if (!w.b_out.empty()) sd["out_proj.bias"] = numpy_of(w.b_out);
      }
      break;
  }
  return sd;
}

const char* Layer::class_name() const {
  switch (config_.variant) {
    case Variant::kSelfAttentionV1:
      return "SelfAttention_v1";
    case Variant::kSelfAttentionV2:
      return "SelfAttention_v2";
    case Variant::kCausalAttention:
      return "CausalAttention";
    case Variant::kMultiHeadWrapper:
      return "MultiHeadAttentionWrapper";
    case Variant::kMultiHeadAttention:
      return "MultiHeadAttention";
    case Variant::kSimplified:
      break;
  }
  return "Layer";
}

// The settings beyond the chapter's that differ from their defaults, e.g. ", num_kv_heads=2,
// head_dim=6, rope='neox', rope_theta=500000.0".
std::string Layer::layer_settings() const {
  const LayerConfig& c = config_;
  std::string s;
  const auto number = [](double v) {
    std::string t = py::str(py::float_(v));
    return t;
  };
  if (c.kv_heads() != c.num_heads) s += ", num_kv_heads=" + std::to_string(c.kv_heads());
  if (c.num_heads * c.resolved_head_dim() != c.d_out)
    s += ", head_dim=" + std::to_string(c.resolved_head_dim());
  if (c.scale > 0) s += ", scale=" + number(c.scale);
  if (c.rope != attn::Rope::kNone) {
    s += std::string(", rope='") + to_string(c.rope) + "', rope_theta=" + number(c.rope_theta);
    if (c.resolved_rope_dim() != c.resolved_head_dim())
      s += ", rope_dim=" + std::to_string(c.resolved_rope_dim());
  }
  if (c.window > 0) s += ", window=" + std::to_string(c.window);
  if (c.alibi) s += ", alibi=True";
  if (c.softcap > 0) s += ", softcap=" + number(c.softcap);
  return s;
}

std::string Layer::repr() const {
  return std::string("attn.") + class_name() + "(d_in=" + std::to_string(config_.d_in) +
         ", d_out=" + std::to_string(config_.d_out) +
         ", num_heads=" + std::to_string(config_.num_heads) +
         ", context_length=" + std::to_string(config_.context_length) +
         ", qkv_bias=" + (config_.qkv_bias ? "True" : "False") +
         ", causal=" + (config_.causal() ? "True" : "False") + layer_settings() +
         ", weight_dtype='" + to_string(engine_.options().weight_dtype) + "', isa='" +
         engine_.isa() + "', threads=" + std::to_string(engine_.threads()) + ")";
}

py::object PySession::prefill(const py::object& x) {
  Input in = to_input(x, "x");
  if (in.array.ndim() != 2 || in.array.shape(1) != config_.d_in) {
    throw py::value_error("prefill takes x of shape [tokens, d_in] = [n, " +
                          std::to_string(config_.d_in) + "], got " +
                          shape_of(in.array).to_string());
  }
  py::array_t<float> out({in.array.shape(0), static_cast<py::ssize_t>(config_.d_out)});
  const ConstTensorView xv{in.array.data(), shape_of(in.array)};
  const TensorView ov{out.mutable_data(), shape_of(out)};
  Status s;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    s = session_.prefill(xv, ov);
  }
  if (!s.ok()) raise(s);
  return wrap(std::move(out), in.torch);
}

py::object PySession::step(const py::object& x) {
  Input in = to_input(x, "x");
  const bool flat = in.array.ndim() == 1;
  if (!((flat && in.array.shape(0) == config_.d_in) ||
        (in.array.ndim() == 2 && in.array.shape(0) == 1 && in.array.shape(1) == config_.d_in))) {
    throw py::value_error("step takes one token: x of shape [1, d_in] or [d_in] with d_in = " +
                          std::to_string(config_.d_in) + ", got " + shape_of(in.array).to_string());
  }
  py::array_t<float> out = flat ? py::array_t<float>(config_.d_out)
                                : py::array_t<float>({py::ssize_t{1}, py::ssize_t(config_.d_out)});
  const ConstTensorView xv{in.array.data(), Shape{1, config_.d_in}};
  const TensorView ov{out.mutable_data(), Shape{1, config_.d_out}};
  Status s;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    s = session_.step(xv, ov);
  }
  if (!s.ok()) raise(s);
  return wrap(std::move(out), in.torch);
}

void PySession::reset() {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(mutex_);
  session_.reset();
}

void PySession::release() {
  py::gil_scoped_release unlocked;
  std::lock_guard<std::mutex> lock(mutex_);
  session_.release();
}

std::shared_ptr<PySession> PySession::fork() {
  Result<Session> child = [&] {
    py::gil_scoped_release unlocked;
    std::lock_guard<std::mutex> lock(mutex_);
    return session_.fork();
  }();
  if (!child.ok()) raise(child.status());
  return std::make_shared<PySession>(std::move(child.value()), config_);
}

py::list advance(const Layer& layer, const std::vector<std::shared_ptr<PySession>>& sessions,
                 const py::list& xs) {
  const LayerConfig& c = layer.config();
  if (static_cast<std::size_t>(py::len(xs)) != sessions.size()) {
    throw py::value_error("advance takes one x per session: " + std::to_string(sessions.size()) +
                          " sessions, " + std::to_string(py::len(xs)) + " inputs");
  }
  std::vector<Input> ins;
  std::vector<std::int64_t> tokens;
  std::int64_t rows = 0;
  for (std::size_t i = 0; i < sessions.size(); ++i) {
    if (!sessions[i]) throw py::value_error("sessions[" + std::to_string(i) + "] is None");
    Input in = to_input(xs[i], "x");
    if (in.array.ndim() != 2 || in.array.shape(1) != c.d_in || in.array.shape(0) < 1) {
      throw py::value_error("advance takes x[" + std::to_string(i) +
                            "] of shape [tokens >= 1, d_in] = [n, " + std::to_string(c.d_in) +
                            "], got " + shape_of(in.array).to_string());
    }
    tokens.push_back(in.array.shape(0));
    rows += in.array.shape(0);
    ins.push_back(std::move(in));
  }
  std::vector<float> x(static_cast<std::size_t>(rows * c.d_in));
  std::vector<float> y(static_cast<std::size_t>(rows * c.d_out));
  std::int64_t row = 0;
  for (const Input& in : ins) {
    std::copy_n(in.array.data(), in.array.size(), x.data() + row * c.d_in);
    row += in.array.shape(0);
  }
  std::vector<Session*> list;
  std::vector<std::mutex*> locks;
  for (const auto& s : sessions) {
    list.push_back(&s->session_);
    locks.push_back(&s->mutex_);
  }
  std::sort(locks.begin(), locks.end());
  if (std::adjacent_find(locks.begin(), locks.end()) != locks.end())
    throw py::value_error("advance takes distinct sessions");
  Status st;
  {
    py::gil_scoped_release unlocked;
    for (std::mutex* m : locks) m->lock();  // in address order: no deadlock between calls
    st = layer.engine().advance(list, tokens, ConstTensorView(x.data(), Shape{rows, c.d_in}),
                                TensorView{y.data(), Shape{rows, c.d_out}});
    for (std::mutex* m : locks) m->unlock();
  }
  if (!st.ok()) raise(st);
  py::list out;
  row = 0;
  for (std::size_t i = 0; i < ins.size(); ++i) {
    py::array_t<float> yi({py::ssize_t(tokens[i]), py::ssize_t(c.d_out)});
    std::copy_n(y.data() + row * c.d_out, tokens[i] * c.d_out, yi.mutable_data());
    row += tokens[i];
    out.append(wrap(std::move(yi), ins[i].torch));
  }
  return out;
}

std::shared_ptr<Layer> make_layer(const LayerConfig& config, const RunOptions& options,
                                  Weights weights) {
  switch (config.variant) {
    case Variant::kSelfAttentionV1:
      return std::make_shared<SelfAttentionV1>(config, options, std::move(weights));
    case Variant::kSelfAttentionV2:
      return std::make_shared<SelfAttentionV2>(config, options, std::move(weights));
    case Variant::kCausalAttention:
      return std::make_shared<CausalAttention>(config, options, std::move(weights));
    case Variant::kMultiHeadWrapper:
      return std::make_shared<MultiHeadAttentionWrapper>(config, options, std::move(weights));
    case Variant::kMultiHeadAttention:
      return std::make_shared<MultiHeadAttention>(config, options, std::move(weights));
    case Variant::kSimplified:
      break;
  }
  return std::make_shared<Layer>(config, options, std::move(weights));
}

std::shared_ptr<Layer> make_seeded_layer(const LayerConfig& config, const EngineOptions& options) {
  if (Status s = validate(config); !s.ok()) raise(s);
  const std::uint64_t seed =
      options.seed ? *options.seed
                   : (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  Result<Weights> w = init_weights_like_torch(config, seed);
  if (!w.ok()) raise(w.status());
  return make_layer(config, options.run, std::move(w.value()));
}

}  // namespace attn::python
