// The README's embedding example, built against the installed package and run by
// tests/package/run.sh. With a safetensors file as argument it loads that layer; without one
// it uses seeded weights in GPT-2 small's shape.
#include <attn/chapter/random.hpp>
#include <attn/engine.hpp>
#include <attn/layer.hpp>
#include <attn/safetensors.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  attn::LayerConfig config =
      attn::LayerConfig::gpt2_small();  // d 768, 12 heads, context 1024, causal
  attn::Weights weights;
  if (argc > 1) {
    auto file = attn::io::SafetensorsFile::open(argv[1]);
    auto layer = file.ok() ? attn::io::load_layer(*file) : file.status();
    if (!layer.ok()) return std::fprintf(stderr, "%s\n", layer.status().to_string().c_str()), 1;
    config = layer->config;
    weights = std::move(layer->weights);
  } else {
    auto w = attn::init_weights_like_torch(config, 123);
    if (!w.ok()) return 1;
    weights = std::move(*w);
  }
  attn::RunOptions run;
  run.threads = 2;  // 0 (default): the CPUs this process may run on
  attn::Result<attn::Engine> engine = attn::Engine::create(config, weights, run);
  if (!engine.ok()) {  // the message names the field or tensor and the values
    std::fprintf(stderr, "%s\n", engine.status().to_string().c_str());
    return 1;
  }

  // forward: [batch, seq_len, d_in] -> [batch, seq_len, d_out]; any thread, concurrently.
  const std::int64_t batch = 2, seq_len = 16, d = config.d_in;
  std::vector<float> values(static_cast<std::size_t>(batch * seq_len * d));
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = std::sin(0.01f * static_cast<float>(i));
  attn::Tensor x(attn::Shape{batch, seq_len, d}, values),
      y(attn::Shape{batch, seq_len, config.d_out});
  if (attn::Status s = engine->forward(x.view(), y.view()); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    return 1;
  }

  // Decoding: a session caches keys and values; prefill the prompt, then one token per step.
  attn::Result<attn::Session> session = engine->new_session();
  if (!session.ok()) return 1;
  attn::Tensor prompt(attn::Shape{seq_len - 1, d},
                      {values.begin(), values.begin() + (seq_len - 1) * d});
  attn::Tensor token(attn::Shape{1, d},
                     {values.begin() + (seq_len - 1) * d, values.begin() + seq_len * d});
  attn::Tensor prompt_out(attn::Shape{seq_len - 1, config.d_out}),
      token_out(attn::Shape{1, config.d_out});
  if (!session->prefill(prompt.view(), prompt_out.view()).ok()) return 1;
  if (!session->step(token.view(), token_out.view()).ok()) return 1;

  // The last token's output equals the full forward's last row (batch item 0).
  const float* last = y.data() + (seq_len - 1) * config.d_out;
  double max_diff = 0;
  for (std::int64_t j = 0; j < config.d_out; ++j) {
    // Not fmax: it drops NaN, and an all-NaN decode would pass. NaN makes max_diff NaN.
    const double diff = std::fabs(token_out.data()[j] - last[j]);
    if (!(diff <= max_diff)) max_diff = diff;
  }
  std::printf(
      "example: %s kernels, %d threads, forward [%lld, %lld, %lld], step vs forward max |diff| "
      "%.2g\n",
      engine->isa(), engine->threads(), static_cast<long long>(batch),
      static_cast<long long>(seq_len), static_cast<long long>(d), max_diff);
  // Errors are values: a sequence longer than context_length is refused, y untouched.
  attn::Tensor too_long(attn::Shape{1, config.context_length + 1, d});
  attn::Tensor too_long_out(attn::Shape{1, config.context_length + 1, config.d_out});
  const attn::Status s = engine->forward(too_long.view(), too_long_out.view());
  std::printf("example: too long: %s\n", s.to_string().c_str());
  return max_diff < 1e-4 && s.code() == attn::ErrorCode::kOutOfRange ? 0 : 1;
}
