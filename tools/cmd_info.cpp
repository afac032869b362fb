// `attn info FILE`: what a safetensors file holds (metadata, tensors, the attention layer found
// and its config) or the shape of a .npy file.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "attn/cache_pool.hpp"
#include "attn/engine.hpp"
#include "attn/layer.hpp"
#include "attn/npy.hpp"
#include "attn/safetensors.hpp"
#include "commands.hpp"
#include "layer_args.hpp"

namespace attn::tools {
namespace {

struct InfoArgs {
  std::string path;
  LayerArgs layer;
};

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool is_npy(const std::string& path) {
  // Only a regular file is peeked at: opening a FIFO would block until a writer came. Other
  // paths fall through to the safetensors reader, which refuses them with a message.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[6] = {};
  const bool npy = std::fread(magic, 1, 6, f) == 6 && std::string(magic, 6) == "\x93NUMPY";
  std::fclose(f);
  return npy;
}

int info_npy(const std::string& path) {
  Result<Tensor> t = io::read_npy(path);
  if (!t.ok()) {
    std::cerr << "attn info: " << t.status().to_string() << "\n";
    return 1;
  }
  double lo = INFINITY, hi = -INFINITY, sum = 0;
  for (float v : t->values()) {
    lo = std::min(lo, double(v));
    hi = std::max(hi, double(v));
    sum += v;
  }
  std::cout << path << ": .npy float32 " << t->shape().to_string() << " (" << t->numel()
            << " values";
  if (t->numel() > 0)
    std::cout << ", min " << lo << ", max " << hi << ", mean " << sum / double(t->numel());
  std::cout << ")\n";
  return 0;
}

// Issue 15: the bytes of the packed weights per weight dtype (an engine packs them, biases
// included, on the default kernels) and the key/value cache bytes per token per cache dtype.
void print_dtype_bytes(const io::Layer& layer) {
  LayerConfig config = layer.config;
  if (config.context_length == 0) config.context_length = 1;
  std::cout << "packed weights:";
  for (DType d : {DType::kF32, DType::kBf16, DType::kF16}) {
    RunOptions run;
    run.backend = Backend::kSerial;
    run.weight_dtype = d;
    Result<Engine> e = Engine::create(config, layer.weights, run);
    std::cout << " " << to_string(d) << " ";
    if (e.ok()) {
      std::cout << e->weight_bytes() << " bytes";
    } else {
      std::cout << "refused (" << e.status().message() << ")";
    }
    std::cout << (d == DType::kF16 ? "\n" : ",");
  }
  // Per token: a pool's block bytes over its positions, for an engine of each cache dtype
  // (a pool of one block: budget = the f32 block, which is at least one block of any dtype).
  std::cout << "kv cache per token:";
  for (DType d : {DType::kF32, DType::kBf16, DType::kF16, DType::kInt8}) {
    RunOptions run;
    run.backend = Backend::kSerial;
    run.kv_dtype = d;
    Result<Engine> e = Engine::create(config, layer.weights, run);
    const auto f32_block = static_cast<std::size_t>(2 * config.kv_dim() * 4 * 128);
    Result<CachePool> pool =
        e.ok() ? CachePool::create(*e, f32_block) : Result<CachePool>(e.status());
    std::cout << " " << to_string(d) << " ";
    if (pool.ok()) {
      std::cout << pool->block_bytes() / static_cast<std::size_t>(pool->block_positions())
                << " bytes";
    } else {
      std::cout << "none (" << pool.status().message() << ")";
    }
    std::cout << (d == DType::kInt8 ? "" : ",");
  }
  std::cout << " (int8: one f32 scale per kv head for keys and for values included)\n";
}

int info(const InfoArgs& args) {
  if (is_npy(args.path)) return info_npy(args.path);
  Result<io::SafetensorsFile> file = io::SafetensorsFile::open(args.path);
  if (!file.ok()) {
    std::cerr << "attn info: " << file.status().to_string() << "\n";
    return 1;
  }
  std::uint64_t data_bytes = 0;
  std::size_t name_width = 4;
  for (const io::TensorInfo& t : file->tensors()) {
    data_bytes += t.size_bytes;
    name_width = std::max(name_width, t.name.size());
  }
  std::cout << args.path << ": safetensors, " << file->tensors().size() << " tensors, "
            << data_bytes << " bytes of data\n";
  if (!file->metadata().empty()) {
    std::cout << "metadata:\n";
    for (const auto& [k, v] : file->metadata()) std::cout << "  " << k << " = " << v << "\n";
  }
  std::cout << "tensors:\n";
  for (const io::TensorInfo& t : file->tensors()) {
    std::printf("  %-*s  %-7s %-16s %10llu bytes\n", int(name_width), t.name.c_str(),
                io::to_string(t.dtype), shape_text(t.shape).c_str(),
                static_cast<unsigned long long>(t.size_bytes));
  }
  std::fflush(stdout);

  Result<io::LayerOptions> options = args.layer.options();
  if (!options.ok()) {
    std::cerr << "attn info: " << options.status().to_string() << "\n";
    return 2;
  }
  Result<io::Layer> layer = io::load_layer(file.value(), options.value());
  if (!layer.ok()) {
    std::cout << "layer: none\n";
    std::cout.flush();
    std::cerr << "attn info: " << layer.status().to_string() << "\n";
    return 1;
  }
  std::cout << "layer: layout " << io::to_string(layer->location.layout) << ", prefix '"
            << layer->location.prefix << "'\n";
  std::cout << "config: " << describe(layer->config) << "\n";
  for (const std::string& note : layer->notes) std::cout << "  " << note << "\n";
  std::cout << "tensors read:";
  for (const std::string& n : layer->tensors) std::cout << " " << n;
  std::cout << "\n";
  print_dtype_bytes(layer.value());
  return 0;
}

}  // namespace

Command add_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* sub = app.add_subcommand("info",
                                     "List a safetensors file's metadata and tensors, the "
                                     "attention layer found in it and its config "
                                     "(or show a .npy file's shape)");
  sub->add_option("file", args->path, "A .safetensors or .npy file")->required();
  args->layer.add_to(sub);
  return {sub, [args] { return info(*args); }};
}

}  // namespace attn::tools
