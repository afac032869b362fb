// Hugging Face Llama/Mistral/Qwen2 and GPT-NeoX attention saved from PyTorch (tests/data, made
// by tools/export_torch.py from the projects' own code): loaded, run fused, unfused and token by
// token through sessions, compared with PyTorch's outputs; configs from the shapes, metadata and
// options, and the errors when they disagree.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "attn/layer.hpp"
#include "attn/npy.hpp"
#include "attn/safetensors.hpp"
#include "engine_fixture.hpp"
#include "helpers.hpp"
#include "io_helpers.hpp"

using attn::ErrorCode;
using attn::LayerConfig;
using attn::Rope;
using attn::Shape;
using attn::Tensor;
using attn::io::LayerOptions;
using attn::io::Layout;
using attn::io::SafetensorsFile;
using test::open_fixture;
using test::read_fixture;

namespace {

// Returns a copy of `file` with __metadata__ edited by `edit`.
template <class Edit>
SafetensorsFile with_metadata(const SafetensorsFile& file, Edit edit) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& info : file.tensors())
    tensors.emplace_back(info.name, file.read(info.name).value());
  std::map<std::string, std::string> meta = file.metadata();
  edit(meta);
  std::vector<attn::io::NamedTensor> named;
  for (const auto& [n, t] : tensors) named.push_back({n, t.view()});
  auto bytes = attn::io::encode_safetensors(named, meta);
  REQUIRE(bytes.ok());
  auto out = SafetensorsFile::from_bytes(bytes.value(), "edited.safetensors");
  REQUIRE(out.ok());
  return out.value();
}

attn::Engine make_engine(const attn::io::Layer& layer, std::int64_t seq_len, attn::Isa isa) {
  LayerConfig c = layer.config;
  if (c.context_length == 0) c.context_length = seq_len;
  attn::RunOptions run;
  run.isa = isa;
  auto engine = attn::Engine::create(c, layer.weights, run);
  INFO(engine.status().to_string());
  REQUIRE(engine.ok());
  return std::move(engine.value());
}

// x: [batch, seq, d_in] -> [batch, seq, d_out] through one session per batch item: a prefill
// of the first `prefill` tokens, then one step per token.
Tensor decode(const attn::Engine& engine, const Tensor& x, std::int64_t prefill) {
  const std::int64_t batch = x.shape()[0], seq = x.shape()[1], d_in = x.shape()[2];
  const std::int64_t d_out = engine.config().d_out;
  Tensor y(Shape{batch, seq, d_out});
  for (std::int64_t b = 0; b < batch; ++b) {
    auto session = engine.new_session();
    REQUIRE(session.ok());
    const float* xb = x.data() + b * seq * d_in;
    float* yb = y.data() + b * seq * d_out;
    if (prefill > 0) {
      Tensor xp(Shape{prefill, d_in}, std::vector<float>(xb, xb + prefill * d_in));
      Tensor yp(Shape{prefill, d_out});
      const attn::Status s = session->prefill(xp.view(), yp.view());
      INFO(s.to_string());
      REQUIRE(s.ok());
      std::copy_n(yp.data(), prefill * d_out, yb);
    }
    for (std::int64_t t = prefill; t < seq; ++t) {
      Tensor xt(Shape{1, d_in}, std::vector<float>(xb + t * d_in, xb + (t + 1) * d_in));
      Tensor yt(Shape{1, d_out});
      const attn::Status s = session->step(xt.view(), yt.view());
      INFO(s.to_string());
      REQUIRE(s.ok());
      std::copy_n(yt.data(), d_out, yb + t * d_out);
    }
  }
  return y;
}

struct HfFixture {
  const char* name;
  const char* prefix;
  Layout layout;
  std::int64_t num_heads, num_kv_heads, head_dim, rope_dim;
  double rope_theta;
  std::int64_t window;
  bool qkv_bias;
  Rope rope = Rope::kNeox;
  bool alibi = false;
  double softcap = 0;
  double scale = 0;  ///< 0: 1/sqrt(head_dim)
};

}  // namespace

TEST_CASE("io: Hugging Face and GPT-NeoX layers match PyTorch fused, unfused and decoding",
          "[io][layers][hf]") {
  const HfFixture fixtures[] = {
      {"hf_llama_gqa", "model.layers.0.self_attn", Layout::kHfLlama, 4, 2, 6, 6, 10000, 0, false},
      {"hf_qwen2_bias", "", Layout::kHfLlama, 6, 2, 4, 4, 1e6, 0, true},
      {"hf_mistral_window", "", Layout::kHfLlama, 4, 1, 4, 4, 10000, 4, false},
      {"gpt_neox_partial", "gpt_neox.layers.0.attention.", Layout::kGptNeox, 2, 2, 8, 4, 10000, 0,
       true},
      // BLOOM: ALiBi over 6 heads (not a power of two), rope none from __metadata__.
      {"bloom_alibi", "transformer.h.0.self_attention", Layout::kGptNeox, 6, 6, 3, 3, 10000, 0,
       true, Rope::kNone, true},
      // Gemma 2: soft-capping at 2, scale 7^-0.5 from __metadata__, GQA, head_dim 10.
      {"gemma2_softcap", "", Layout::kHfLlama, 4, 2, 10, 10, 10000, 0, false, Rope::kNeox, false,
       2.0, 0.3779644730092272},
  };
  for (const HfFixture& f : fixtures) {
    CAPTURE(f.name);
    LayerOptions o;
    o.prefix = f.prefix;
    auto layer = attn::io::load_layer(open_fixture(f.name), o);
    INFO(layer.status().to_string());
    REQUIRE(layer.ok());
    const LayerConfig& c = layer->config;
    CHECK(layer->location.layout == f.layout);
    CHECK(c.num_heads == f.num_heads);
    CHECK(c.kv_heads() == f.num_kv_heads);
    CHECK(c.resolved_head_dim() == f.head_dim);
    CHECK(c.rope == f.rope);
    if (f.rope != Rope::kNone) CHECK(c.resolved_rope_dim() == f.rope_dim);
    CHECK(c.alibi == f.alibi);
    CHECK(c.softcap == f.softcap);
    CHECK(c.resolved_scale() ==
          Approx(f.scale > 0 ? f.scale : 1 / std::sqrt(double(f.head_dim))).epsilon(1e-15));
    CHECK(c.rope_theta == f.rope_theta);
    CHECK(c.window == f.window);
    CHECK(c.qkv_bias == f.qkv_bias);
    CHECK(c.causal());

    const Tensor x = read_fixture(std::string(f.name) + ".input.npy");
    const Tensor want = read_fixture(std::string(f.name) + ".output.npy");
    LayerConfig rc = c;
    rc.context_length = x.shape()[-2];
    auto ref = attn::reference::forward(rc, layer->weights, x.view());
    REQUIRE(ref.ok());
    CHECK(test::max_error(ref->values, want.values()) <= 1.0);
    for (const auto isa : test::supported_isas()) {
      CAPTURE(attn::to_string(isa));
      const attn::Engine engine = make_engine(layer.value(), x.shape()[-2], isa);
      for (const auto impl : {attn::AttentionImpl::kFused, attn::AttentionImpl::kUnfused}) {
        CAPTURE(int(impl));
        Tensor y(Shape{x.shape()[0], x.shape()[1], c.d_out});
        const attn::Status s = engine.forward(x.view(), y.view(), impl);
        INFO(s.to_string());
        REQUIRE(s.ok());
        CHECK(test::max_error(y.values(), want.values()) <= 1.0);
      }
      for (const std::int64_t prefill : {std::int64_t{0}, x.shape()[1] / 2}) {
        CAPTURE(prefill);
        CHECK(test::max_error(decode(engine, x, prefill).values(), want.values()) <= 1.0);
      }
    }
  }
}

TEST_CASE("io: a GQA layer matches PyTorch at positions past 1000 (forward and sessions)",
          "[io][layers][hf]") {
  auto layer = attn::io::load_layer(open_fixture("hf_llama_long"));
  REQUIRE(layer.ok());
  CHECK(layer->config.kv_heads() == 1);
  CHECK(layer->config.num_heads == 2);
  const Tensor x = read_fixture("hf_llama_long.input.npy");
  const Tensor want = read_fixture("hf_llama_long.output.npy");
  REQUIRE(x.shape()[1] == 1030);
  const attn::Engine engine = make_engine(layer.value(), 1030, attn::Isa::kAuto);
  Tensor y(want.shape());
  REQUIRE(engine.forward(x.view(), y.view()).ok());
  CHECK(test::max_error(y.values(), want.values()) <= 1.0);
  // Prefill 1000 tokens, then step through positions 1000 .. 1029.
  CHECK(test::max_error(decode(engine, x, 1000).values(), want.values()) <= 1.0);
}

TEST_CASE("io: HF configs come from the options, __metadata__ and the shapes", "[io][layers][hf]") {
  const SafetensorsFile gqa = open_fixture("hf_llama_gqa");
  // Shapes: q_proj 24 rows / 4 heads = head_dim 6; k_proj 12 rows / 6 = 2 kv heads.
  auto layer = attn::io::load_layer(gqa);
  REQUIRE(layer.ok());
  auto has_note = [&](const std::string& text) {
    return std::any_of(layer->notes.begin(), layer->notes.end(),
                       [&](const std::string& n) { return n.find(text) != std::string::npos; });
  };
  CHECK(has_note("head_dim = 6 (rows of 'model.layers.0.self_attn.q_proj.weight' / num_heads)"));
  CHECK(has_note("num_kv_heads = 2 (rows of 'model.layers.0.self_attn.k_proj.weight'"));
  CHECK(has_note("rope = neox (from __metadata__)"));
  CHECK(has_note("rope_theta = 10000 (from __metadata__)"));

  // Options win over the metadata and the layout's default.
  LayerOptions o;
  o.rope = Rope::kGptj;
  o.rope_theta = 500000;
  o.scale = 0.25;
  o.window = 3;
  layer = attn::io::load_layer(gqa, o);
  REQUIRE(layer.ok());
  CHECK(layer->config.rope == Rope::kGptj);
  CHECK(layer->config.rope_theta == 500000);
  CHECK(layer->config.scale == 0.25);
  CHECK(layer->config.window == 3);
  CHECK(has_note("rope = gptj (from the options)"));

  // No metadata at all: the layout from the names, rope neox by default, num_heads from
  // --head-dim, or an error that says what to pass.
  const SafetensorsFile bare = with_metadata(gqa, [](auto& meta) { meta.clear(); });
  test::require_error(attn::io::load_layer(bare).status(), ErrorCode::kInvalidArgument,
                      {"num_heads is not recorded", "--head-dim N"});
  LayerOptions hd;
  hd.head_dim = 6;
  layer = attn::io::load_layer(bare, hd);
  REQUIRE(layer.ok());
  CHECK(layer->location.layout == Layout::kHfLlama);
  CHECK(layer->config.num_heads == 4);
  CHECK(layer->config.kv_heads() == 2);
  CHECK(layer->config.rope == Rope::kNeox);
  CHECK(has_note("rope = neox (default of layout hf-llama)"));

  // Metadata keys read from a file.
  const SafetensorsFile meta = with_metadata(gqa, [](auto& m) {
    m["num_kv_heads"] = "2";
    m["head_dim"] = "6";
    m["rope_dim"] = "4";
    m["scale"] = "0.5";
    m["window"] = "5";
  });
  layer = attn::io::load_layer(meta);
  REQUIRE(layer.ok());
  CHECK(layer->config.rope_dim == 4);
  CHECK(layer->config.scale == 0.5);
  CHECK(layer->config.window == 5);
  CHECK(has_note("window = 5 (from __metadata__)"));

  // ALiBi and soft-capping: __metadata__, then the options win.
  const SafetensorsFile bloom = open_fixture("bloom_alibi");
  LayerOptions bo;
  bo.prefix = "transformer.h.0.self_attention";
  layer = attn::io::load_layer(bloom, bo);
  REQUIRE(layer.ok());
  CHECK(layer->config.alibi);
  CHECK(has_note("alibi = true (from __metadata__)"));
  bo.alibi = false;
  bo.softcap = 30;
  layer = attn::io::load_layer(bloom, bo);
  REQUIRE(layer.ok());
  CHECK_FALSE(layer->config.alibi);
  CHECK(layer->config.softcap == 30);
  CHECK(has_note("alibi = false (from the options)"));
  CHECK(has_note("softcap = 30 (from the options)"));
  const SafetensorsFile gemma = open_fixture("gemma2_softcap");
  layer = attn::io::load_layer(gemma);
  REQUIRE(layer.ok());
  CHECK(layer->config.softcap == 2);
  CHECK(has_note("softcap = 2 (from __metadata__)"));
}

TEST_CASE("io: HF and GPT-NeoX shapes that disagree with the flags, and malformed metadata",
          "[io][layers][hf]") {
  const SafetensorsFile gqa = open_fixture("hf_llama_gqa");
  LayerOptions o;
  o.num_kv_heads = 4;
  test::require_error(attn::io::load_layer(gqa, o).status(), ErrorCode::kInvalidArgument,
                      {"num_kv_heads = 4 (from the options)", "24 key rows",
                       "'model.layers.0.self_attn.k_proj.weight' has 12 (2 kv heads)"});
  o = {};
  o.head_dim = 8;
  test::require_error(attn::io::load_layer(gqa, o).status(), ErrorCode::kInvalidArgument,
                      {"head_dim = 8 (from the options)", "num_heads = 4 (from __metadata__)",
                       "32 query rows", "q_proj.weight' has 24"});
  o = {};
  o.num_heads = 5;
  test::require_error(attn::io::load_layer(gqa, o).status(), ErrorCode::kInvalidArgument,
                      {"has 24 rows, not a multiple of num_heads = 5 (from the options)"});

  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"rope", "rotary"},
                                                        {"rope_theta", "inf"},
                                                        {"rope_theta", "ten"},
                                                        {"num_kv_heads", "-2"},
                                                        {"head_dim", "6.5"},
                                                        {"scale", "0"},
                                                        {"window", "x"},
                                                        {"alibi", "yes"},
                                                        {"softcap", "0"},
                                                        {"softcap", "-30"},
                                                        {"softcap", "nan"}}) {
    CAPTURE(key, value);
    const SafetensorsFile bad = with_metadata(gqa, [&](auto& m) { m[key] = value; });
    test::require_error(attn::io::load_layer(bad).status(), ErrorCode::kCorruptData,
                        {"__metadata__['" + key + "'] = '" + value + "'"});
  }

  // GPT-NeoX has one kv head per query head.
  LayerOptions neox;
  neox.num_kv_heads = 1;
  test::require_error(attn::io::load_layer(open_fixture("gpt_neox_partial"), neox).status(),
                      ErrorCode::kInvalidArgument, {"num_kv_heads = 1 (from the options)"});
  // Odd or too large rotary dims are the engine's errors, with the file named.
  neox = {};
  neox.rope_dim = 10;
  test::require_error(attn::io::load_layer(open_fixture("gpt_neox_partial"), neox).status(),
                      ErrorCode::kInvalidArgument,
                      {"gpt_neox_partial.safetensors", "rope_dim = 10"});
  // ALiBi with rotary positions: a GPT-NeoX layer (rope neox by default) told to use ALiBi.
  neox = {};
  neox.alibi = true;
  test::require_error(attn::io::load_layer(open_fixture("gpt_neox_partial"), neox).status(),
                      ErrorCode::kInvalidArgument,
                      {"gpt_neox_partial.safetensors", "alibi and rope = neox"});
}
