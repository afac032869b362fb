// The Python module's layer and session objects: an attn::Engine plus the chapter's view of it
// (class, names of its parameters), and the conversions between Python arrays and tensor views.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "attn/engine.hpp"
#include "attn/io.hpp"

namespace attn::python {

namespace py = pybind11;

/// Raises the Python exception for `s`: MemoryError for kResourceExhausted, OSError for
/// kIoError, ValueError otherwise; the message is the engine's. Precondition: !s.ok().
[[noreturn]] void raise(const Status& s);

/// What a layer's constructor does beyond its shape: how the engine runs, and the seed.
struct EngineOptions {
  RunOptions run;
  std::optional<std::uint64_t> seed;  ///< none: a random seed (weights as a fresh module's)
};

/// The dtype keyword options every layer takes, as given ("f32", "bf16", "f16", "int8").
struct DTypeNames {
  std::string weight = "f32", compute = "f32", kv = "f32";
};

/// Parses the keyword options every layer takes (threads, backend, isa, max_workspace_bytes,
/// weight_dtype, compute_dtype, kv_dtype). An unknown name or one a setting does not take
/// raises ValueError naming it; what the engine refuses (compute_dtype bf16 without
/// weight_dtype bf16) is the engine's error, raised when the layer is created.
RunOptions run_options(int threads, const std::string& backend, const std::string& isa,
                       std::int64_t max_workspace_bytes, const DTypeNames& dtypes);

/// One attention layer. Thread safety: forward() releases the GIL and may run from many
/// Python threads at once; load_state_dict() swaps the engine under the GIL, so a call
/// already running finishes with the old weights.
class Layer {
 public:
  Layer(const LayerConfig& config, const RunOptions& options, Weights weights);
  virtual ~Layer() = default;

  /// x: [batch, seq_len, d_in] or [seq_len, d_in], numpy float32 or torch float32 (CPU)
  /// -> the same kind and rank, last dim d_out; written into `out` (returned) when not None.
  py::object forward(const py::object& x, const py::object& out) const;
  /// Replaces the weights by `state_dict`'s (chapter, nn.MultiheadAttention or GPT-2 names).
  void load_state_dict(const py::handle& state_dict, const std::string& prefix);
  /// Returns the parameters (and mask buffer) under this class's chapter names, as numpy.
  py::dict state_dict() const;

  const LayerConfig& config() const { return config_; }
  const Engine& engine() const { return engine_; }
  /// The chapter's class name for the variant ("MultiHeadAttention", ...).
  const char* class_name() const;
  std::string repr() const;
  std::string layer_settings() const;

 private:
  LayerConfig config_;
  RunOptions options_;
  Weights weights_;  // nn.Linear layout, kept for state_dict()
  Engine engine_;
};

/// A KV-cache session of one layer (keeps the layer's engine alive).
/// Thread safety: calls on one session are serialised by a mutex.
class PySession {
 public:
  PySession(Session session, const LayerConfig& config)
      : session_(std::move(session)), config_(config) {}

  /// x: [tokens, d_in] -> [tokens, d_out].
  py::object prefill(const py::object& x);
  /// x: [1, d_in] or [d_in] -> the same rank, last dim d_out.
  py::object step(const py::object& x);
  void reset();
  /// Gives the session's cache blocks back to its pool (position 0).
  void release();
  /// A new session with this one's positions, sharing its full blocks copy-on-write.
  std::shared_ptr<PySession> fork();
  std::int64_t position() const { return session_.position(); }
  std::int64_t capacity() const { return session_.capacity(); }
  std::size_t cache_bytes() const { return session_.cache_bytes(); }

 private:
  friend py::list advance(const Layer& layer, const std::vector<std::shared_ptr<PySession>>&,
                          const py::list& xs);
  Session session_;
  LayerConfig config_;
  std::mutex mutex_;
};

/// Layer.advance: sessions[i] takes xs[i] ([n_i, d_in], n_i >= 1) in one ragged call; returns
/// the outputs [n_i, d_out] in order.
py::list advance(const Layer& layer, const std::vector<std::shared_ptr<PySession>>& sessions,
                 const py::list& xs);

/// Returns the layer of `variant` under its chapter class (for pybind11's downcast).
std::shared_ptr<Layer> make_layer(const LayerConfig& config, const RunOptions& options,
                                  Weights weights);
/// Builds a layer of `config` with the chapter's PyTorch initialisation after manual_seed(seed).
std::shared_ptr<Layer> make_seeded_layer(const LayerConfig& config, const EngineOptions& options);

// The chapter's classes: the same object, registered under each class's name.
struct SelfAttentionV1 : Layer {
  using Layer::Layer;
};
struct SelfAttentionV2 : Layer {
  using Layer::Layer;
};
struct CausalAttention : Layer {
  using Layer::Layer;
};
struct MultiHeadAttentionWrapper : Layer {
  using Layer::Layer;
};
struct MultiHeadAttention : Layer {
  using Layer::Layer;
};

}  // namespace attn::python
