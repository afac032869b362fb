// Uses the installed attn like a user: create an engine, run forward, check an error. Also
// checks that the umbrella and the io.hpp compatibility header compile outside the tree.
#include <attn/attn.hpp>
#include <attn/chapter/random.hpp>
#include <attn/io.hpp>

#include <cstdio>

int main() {
  attn::LayerConfig config =
      attn::LayerConfig::chapter(attn::Variant::kMultiHeadAttention, 3, 2, 2, 6);
  auto weights = attn::init_weights_like_torch(config, 123);
  auto engine = weights.ok() ? attn::Engine::create(config, weights.value()) : weights.status();
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().to_string().c_str());
    return 1;
  }
  const attn::Tensor x(attn::Shape{6, 3},
                       {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f, 0.22f, 0.58f,
                        0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f});
  attn::Tensor y(attn::Shape{6, 2});
  if (!engine->forward(x.view(), y.view()).ok()) return 1;
  std::printf("first row: %.4f %.4f (kernels %s)\n", y.data()[0], y.data()[1], engine->isa());
  // The book prints 0.3190, 0.4858 for this row.
  if (y.data()[0] < 0.3189f || y.data()[0] > 0.3191f) return 1;
  attn::Tensor too_long(attn::Shape{7, 3}), out7(attn::Shape{7, 2});
  return engine->forward(too_long.view(), out7.view()).code() == attn::ErrorCode::kOutOfRange ? 0
                                                                                              : 1;
}
