// `attn run`: one attention layer from a safetensors file over an .npy input, output to an
// .npy file or stdout; optionally compared with an expected output (e.g. PyTorch's).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attn/engine.hpp"
#include "attn/io.hpp"
#if ATTN_HAVE_MPI
#include "attn/distributed.hpp"
#endif
#include "cli_flags.hpp"
#include "commands.hpp"
#include "layer_args.hpp"

namespace attn::tools {
namespace {

struct RunArgs {
  std::string weights, input, output, expect;
  LayerArgs layer;
  RunFlags run;
  DTypeFlags dtypes;
  double atol = 1e-5, rtol = 1e-5;
  bool verbose = false;
  bool decode = false;
  bool distributed = false;
};

int fail(const std::string& message) {
  std::cerr << "attn run: " << message << "\n";
  return 1;
}

int fail(const Status& s) { return fail(s.to_string()); }

void print_tensor(const Tensor& t) {
  const Shape& s = t.shape();
  std::printf("float32 %s\n", s.to_string().c_str());
  const std::int64_t cols = s.rank() > 0 ? s[-1] : 1;
  const std::int64_t rows = cols > 0 ? t.numel() / cols : 0;
  const std::int64_t seq = s.rank() == 3 ? s[1] : rows;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (s.rank() == 3 && r % seq == 0)
      std::printf("batch item %lld:\n", static_cast<long long>(r / seq));
    for (std::int64_t c = 0; c < cols; ++c)
      std::printf("%s%10.6f", c ? " " : "  ", double(t.data()[r * cols + c]));
    std::printf("\n");
  }
}

// Compares `got` with the .npy at args.expect: |got - want| <= atol + rtol * |want| everywhere;
// a NaN or Inf on either side is outside whatever the tolerances (they are finite and >= 0: the
// flags' validators refuse the rest, so a negative or NaN tolerance cannot pass everything).
int check_expected(const RunArgs& args, const Tensor& got) {
  Result<Tensor> want = io::read_npy(args.expect);
  if (!want.ok()) return fail(want.status());
  if (!(want->shape() == got.shape())) {
    return fail("--expect " + args.expect + " has shape " + want->shape().to_string() +
                " but the output is " + got.shape().to_string());
  }
  double max_abs = 0, worst = 0;
  std::int64_t worst_i = 0, bad = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data()[i], w = want->data()[i];
    const double diff = std::abs(g - w), tol = args.atol + args.rtol * std::abs(w);
    const bool outside = !(std::isfinite(diff) && diff <= tol);  // NaN or Inf on either side
    const double ratio = outside ? (tol > 0 && std::isfinite(diff) ? diff / tol : INFINITY)
                                 : (tol > 0 ? diff / tol : 0);
    if (outside) ++bad;
    if (std::isnan(diff) || diff > max_abs) max_abs = diff;
    if (ratio > worst) worst = ratio, worst_i = i;
  }
  std::fprintf(
      stderr,
      "attn run: max |diff| %.3g against %s (%lld of %lld values outside %.1g + %.1g*|ref|)\n",
      max_abs, args.expect.c_str(), static_cast<long long>(bad),
      static_cast<long long>(got.numel()), args.atol, args.rtol);
  if (bad > 0) {
    std::fprintf(stderr, "attn run: worst at flat index %lld: got %.9g, expected %.9g\n",
                 static_cast<long long>(worst_i), double(got.data()[worst_i]),
                 double(want->data()[worst_i]));
    return 1;
  }
  return 0;
}

// Feeds x token by token through KV-cache sessions, one per batch item, all advanced by one
// batched step per position; gives the same output as one causal forward. EngineT is Engine
// (SessionT Session) or, with --distributed, dist::DistributedEngine (dist::DistributedSession).
template <class EngineT, class SessionT>
Status decode(const EngineT& engine, const Tensor& x, Tensor& y) {
  const Shape& xs = x.shape();
  const std::int64_t batch = xs.rank() == 3 ? xs[0] : 1, seq = xs[-2];
  const std::int64_t d_in = xs[-1], d_out = engine.config().d_out;
  std::vector<SessionT> sessions;
  std::vector<SessionT*> ptrs;
  for (std::int64_t b = 0; b < batch; ++b) {
    Result<SessionT> s = engine.new_session();
    if (!s.ok()) return s.status();
    sessions.push_back(std::move(s.value()));
  }
  for (SessionT& s : sessions) ptrs.push_back(&s);
  Result<Tensor> xt = Tensor::zeros(Shape{batch, d_in}), yt = Tensor::zeros(Shape{batch, d_out});
  if (!xt.ok()) return xt.status();
  if (!yt.ok()) return yt.status();
  for (std::int64_t t = 0; t < seq; ++t) {
    for (std::int64_t b = 0; b < batch; ++b)
      std::copy_n(x.data() + (b * seq + t) * d_in, d_in, xt->data() + b * d_in);
    if (Status s = engine.step(ptrs, xt->view(), yt->view()); !s.ok()) return s;
    for (std::int64_t b = 0; b < batch; ++b)
      std::copy_n(yt->data() + b * d_out, d_out, y.data() + (b * seq + t) * d_out);
  }
  return {};
}

std::int64_t count_non_finite(const Tensor& t) {
  return std::count_if(t.values().begin(), t.values().end(),
                       [](float v) { return !std::isfinite(v); });
}

int finish(const RunArgs& args, const Tensor& x, const Tensor& y);

int run(const RunArgs& args) {
  Result<io::LayerOptions> options = args.layer.options();
  if (!options.ok()) return fail(options.status());
  {
    // 16-bit weights stored in --weight-dtype's type go to the packed panels without a
    // float32 copy (peak memory and load time; the packed bytes are the same).
    RunOptions wanted;
    args.dtypes.apply(wanted);
    if (wanted.weight_dtype != DType::kF32) options->keep_16bit = wanted.weight_dtype;
  }

  Result<io::SafetensorsFile> file = io::SafetensorsFile::open(args.weights);
  if (!file.ok()) return fail(file.status());
  Result<io::Layer> layer = io::load_layer(file.value(), options.value());
  if (!layer.ok()) return fail(layer.status());
  LayerConfig config = layer->config;

  Result<Tensor> x = io::read_npy(args.input);
  if (!x.ok()) return fail(x.status());
  const Shape& xs = x->shape();
  if ((xs.rank() != 2 && xs.rank() != 3) || xs[-1] != config.d_in) {
    return fail(args.input + ": shape " + xs.to_string() +
                " does not fit the layer: expected [batch, seq_len, " +
                std::to_string(config.d_in) + "] or [seq_len, " + std::to_string(config.d_in) +
                "]");
  }
  const std::int64_t seq_len = xs[-2];
  if (config.context_length == 0) config.context_length = std::max<std::int64_t>(seq_len, 1);
  if (seq_len > config.context_length) {
    return fail(args.input + ": seq_len " + std::to_string(seq_len) + " exceeds context_length " +
                std::to_string(config.context_length) + " (raise it with --context-length)");
  }
  RunOptions run;
  if (Status s = args.run.apply(run); !s.ok()) return fail(s);
  args.dtypes.apply(run);
  // The output's size comes from the input and the file: allocated through a checked path.
  Result<Tensor> out = Tensor::zeros(xs.rank() == 3 ? Shape{xs[0], xs[1], config.d_out}
                                                    : Shape{xs[0], config.d_out});
  if (!out.ok()) return fail(out.status());
  Tensor& y = out.value();

  if (args.distributed) {
#if ATTN_HAVE_MPI
    // Under mpirun: every rank reads the file, keeps its heads, and rank 0 writes the result.
    Result<dist::Runtime> mpi = dist::Runtime::init(nullptr, nullptr);
    if (!mpi.ok()) return fail(mpi.status());
    dist::Options dist_options;
    dist_options.run = run;
    dist_options.output_on_all_ranks = false;
    Result<dist::DistributedEngine> engine = dist::DistributedEngine::create(
        dist::Communicator::world(), config, layer->weights, dist_options);
    if (!engine.ok()) return fail(engine.status());
    if (args.verbose && mpi->rank() == 0) {
      std::cerr << "attn run: " << describe(config) << "\nattn run: " << mpi->size() << " ranks x "
                << engine->local_engine().threads() << " threads, kernels "
                << engine->local_engine().isa() << "\n";
    }
    const Status status = args.decode ? decode<dist::DistributedEngine, dist::DistributedSession>(
                                            engine.value(), x.value(), y)
                                      : engine->forward(x->view(), y.view());
    if (!status.ok()) return fail(status);
    if (mpi->rank() != 0) return 0;
    return finish(args, x.value(), y);
#else
    return fail(
        "--distributed: this attn was built without MPI (install libopenmpi-dev and rebuild)");
#endif
  }

  Result<Engine> engine = Engine::create(config, layer->weights, run);
  if (!engine.ok()) return fail(engine.status());
  if (args.verbose) {
    std::cerr << "attn run: " << args.weights << ": layout "
              << io::to_string(layer->location.layout) << ", prefix '" << layer->location.prefix
              << "'\n"
              << "attn run: " << describe(config) << "\n";
    for (const std::string& note : layer->notes) std::cerr << "attn run:   " << note << "\n";
    std::cerr << "attn run: kernels " << engine->isa() << ", " << engine->threads() << " threads ("
              << to_string(run.backend) << ")\n";
  }
  const Status status = args.decode ? decode<Engine, Session>(engine.value(), x.value(), y)
                                    : engine->forward(x->view(), y.view());
  if (!status.ok()) return fail(status);
  return finish(args, x.value(), y);
}

// Warns about non-finite values, writes or prints y, and compares it with --expect.
int finish(const RunArgs& args, const Tensor& x, const Tensor& y) {
  // NaN or Inf in, NaN out: computed as PyTorch would, but never silently.
  if (const std::int64_t bad_in = count_non_finite(x), bad_out = count_non_finite(y);
      bad_in + bad_out > 0) {
    std::cerr << "attn run: warning: " << bad_in << " non-finite (NaN or Inf) input values, "
              << bad_out << " non-finite output values\n";
  }

  if (!args.output.empty()) {
    if (Status s = io::write_npy(args.output, y.view()); !s.ok()) return fail(s);
  } else {
    print_tensor(y);
  }
  return args.expect.empty() ? 0 : check_expected(args, y);
}

}  // namespace

Command add_run(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* sub = app.add_subcommand("run",
                                     "Run one attention layer from a safetensors file over an .npy "
                                     "input x [batch, seq_len, d_in] or "
                                     "[seq_len, d_in]; the output has the same rank");
  sub->add_option("--weights", args->weights,
                  "Weights: a .safetensors file (e.g. from tools/export_torch.py)")
      ->required();
  sub->add_option("--input", args->input, "Input: a .npy file of float32 ('<f4')")->required();
  sub->add_option("--output", args->output, "Write the output here as .npy (default: print it)");
  args->layer.add_to(sub);
  args->run.add_to(sub, /*sweep=*/false);
  args->dtypes.add_to(sub, /*sweep=*/false);
  sub->add_option("--expect", args->expect,
                  "Compare the output with this .npy; exit 1 unless |diff| <= atol + "
                  "rtol*|expected| everywhere (NaN or Inf on either side is outside)");
  const double kMax = std::numeric_limits<double>::max();
  sub->add_option("--atol", args->atol, "Absolute tolerance of --expect (finite, >= 0)")
      ->check(finite_in_range(0, kMax))
      ->capture_default_str();
  sub->add_option("--rtol", args->rtol, "Relative tolerance of --expect (finite, >= 0)")
      ->check(finite_in_range(0, kMax))
      ->capture_default_str();
  sub->add_flag("--decode", args->decode,
                "Feed the input token by token through KV-cache sessions (one per batch item, "
                "advanced together by batched steps) instead of one forward; same output");
  sub->add_flag("--distributed", args->distributed,
                "Split the heads over the ranks of `mpirun -np P attn run --distributed ...` (each "
                "rank reads its slice of the weights; rank 0 writes the output)");
  sub->add_flag("-v,--verbose", args->verbose,
                "Describe the layer, its config and the kernels on stderr");
  return {sub, [args] { return run(*args); }};
}

}  // namespace attn::tools
