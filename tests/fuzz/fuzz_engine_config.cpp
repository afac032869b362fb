// Fuzzes config, weight and input-shape validation: any bytes become a config (sizes drawn
// from small values and from hostile ones: 0, negative, huge, overflowing) and an input
// shape; the engine must return an error or compute, never crash, read out of bounds or
// allocate absurdly.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attn/chapter/random.hpp"
#include "attn/engine.hpp"

namespace {

class Bytes {
 public:
  Bytes(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  // A size: mostly small, sometimes hostile.
  std::int64_t size() {
    static constexpr std::int64_t kHostile[] = {0,
                                                -1,
                                                -7,
                                                std::int64_t{1} << 31,
                                                std::int64_t{1} << 32,
                                                std::int64_t{1} << 62,
                                                INT64_MAX,
                                                INT64_MIN,
                                                3 << 20};
    const std::uint8_t b = byte();
    if (b >= 0xF0) return kHostile[b % (sizeof(kHostile) / sizeof(kHostile[0]))];
    return b % 24;
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

constexpr std::int64_t kMaxValues = 1 << 16;  // inputs/weights the harness backs with memory

bool small(const attn::Shape& s) {
  const std::int64_t n = s.numel();
  return n >= 0 && n <= kMaxValues;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  attn::LayerConfig c;
  c.variant = static_cast<attn::Variant>(in.byte() % 6);
  c.d_in = in.size();
  c.d_out = in.size();
  c.num_heads = in.size();
  c.context_length = in.size();
  c.qkv_bias = in.byte() & 1;
  c.mask = static_cast<attn::Mask>(in.byte() % 3);
  c.window = in.size();
  attn::RunOptions run;
  run.backend = attn::Backend::kSerial;
  run.threads = static_cast<int>(in.byte() % 3);
  const std::int64_t limit = in.size();
  run.max_workspace_bytes =
      (in.byte() & 1) ? 0 : (limit > 0 && limit < (std::int64_t{1} << 40) ? limit * 64 : limit);
  if (!attn::validate(c).ok() || !attn::validate(run).ok()) return 0;
  // Weights: drawn when the config is small enough, else left empty (create must refuse).
  attn::Weights w;
  std::int64_t n_in = 0, n_out = 0;
  if (!__builtin_mul_overflow(c.d_in, c.d_out, &n_in) &&
      !__builtin_mul_overflow(c.d_out, c.d_out, &n_out) && n_in <= kMaxValues &&
      n_out <= kMaxValues) {
    auto drawn = attn::init_weights_like_torch(c, in.byte());
    if (drawn.ok()) w = std::move(drawn.value());
    if (in.byte() == 0xAB)
      w.w_key = attn::Tensor(attn::Shape{c.d_out + 1, c.d_in});  // a wrong shape
  }
  auto engine = attn::Engine::create(c, w, run);
  if (!engine.ok()) return 0;
  // Input and output shapes, sometimes inconsistent with the config.
  const int rank = 2 + in.byte() % 2;
  attn::Shape xs = rank == 3 ? attn::Shape{in.size(), in.size(), in.byte() & 1 ? c.d_in : in.size()}
                             : attn::Shape{in.size(), in.byte() & 1 ? c.d_in : in.size()};
  attn::Shape ys = xs;
  if (in.byte() & 1)
    ys = rank == 3 ? attn::Shape{xs[0], xs[1], c.d_out} : attn::Shape{xs[0], c.d_out};
  if (!small(xs) || !small(ys)) return 0;  // the harness cannot back these with memory
  std::vector<float> x(static_cast<std::size_t>(xs.numel()), 0.5f),
      y(static_cast<std::size_t>(ys.numel()));
  const auto impl = (in.byte() & 1) ? attn::AttentionImpl::kUnfused : attn::AttentionImpl::kFused;
  (void)engine->forward(attn::ConstTensorView(x.data(), xs), attn::TensorView{y.data(), ys}, impl);
  // A session and a step, when the engine allows them.
  auto session = engine->new_session();
  if (session.ok() && rank == 2 && xs[0] >= 1) {
    (void)session->prefill(attn::ConstTensorView(x.data(), xs), attn::TensorView{y.data(), ys});
    std::vector<float> x1(static_cast<std::size_t>(c.d_in), 0.25f),
        y1(static_cast<std::size_t>(c.d_out));
    (void)session->step(attn::ConstTensorView(x1.data(), attn::Shape{1, c.d_in}),
                        attn::TensorView{y1.data(), attn::Shape{1, c.d_out}});
  }
  return 0;
}
