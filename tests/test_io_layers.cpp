// Layers saved from PyTorch (tests/data, made by tools/export_torch.py) run through the engine
// on every instruction set and match PyTorch's outputs; layout detection, prefixes, options,
// and the errors of files that do not fit.
#include <catch2/catch.hpp>

#include <functional>
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
using attn::Shape;
using attn::Tensor;
using attn::io::LayerOptions;
using attn::io::Layout;
using attn::io::SafetensorsFile;
using test::open_fixture;
using test::read_fixture;

namespace {

// Runs `layer` over `x` on `isa`; context_length falls back to seq_len as attn run does.
Tensor run(const attn::io::Layer& layer, const Tensor& x, attn::Isa isa) {
  LayerConfig c = layer.config;
  if (c.context_length == 0) c.context_length = x.shape()[-2];
  attn::RunOptions run;
  run.isa = isa;
  auto engine = attn::Engine::create(c, layer.weights, run);
  INFO(engine.status().to_string());
  REQUIRE(engine.ok());
  const Shape& s = x.shape();
  Tensor y(s.rank() == 3 ? Shape{s[0], s[1], c.d_out} : Shape{s[0], c.d_out});
  const attn::Status st = engine->forward(x.view(), y.view());
  INFO(st.to_string());
  REQUIRE(st.ok());
  return y;
}

// Copies every tensor of `file` into a new in-memory file after `edit` changes the list.
using Edit = std::function<void(std::vector<std::pair<std::string, Tensor>>&,
                                std::map<std::string, std::string>&)>;
SafetensorsFile rewrite(const SafetensorsFile& file, const Edit& edit) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& info : file.tensors())
    tensors.emplace_back(info.name, file.read(info.name).value());
  std::map<std::string, std::string> meta = file.metadata();
  edit(tensors, meta);
  std::vector<attn::io::NamedTensor> named;
  for (const auto& [n, t] : tensors) named.push_back({n, t.view()});
  auto bytes = attn::io::encode_safetensors(named, meta);
  REQUIRE(bytes.ok());
  auto out = SafetensorsFile::from_bytes(bytes.value(), "edited.safetensors");
  REQUIRE(out.ok());
  return out.value();
}

void drop(std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const auto& p) { return p.first == name; });
}

Tensor& find(std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& name) {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  FAIL("no tensor " << name);
  return tensors.front().second;
}

// LayerOptions with a prefix and optionally a layout (designated initializers would warn
// about the members left out).
LayerOptions opts(std::string prefix, Layout layout = Layout::kAuto) {
  LayerOptions o;
  o.prefix = std::move(prefix);
  o.layout = layout;
  return o;
}

LayerOptions heads(std::int64_t n, std::string prefix = "") {
  LayerOptions o = opts(std::move(prefix));
  o.num_heads = n;
  return o;
}

struct Fixture {
  const char* name;
  Layout layout;
  const char* prefix;
  const char* output;  // .npy of PyTorch's output
};

}  // namespace

TEST_CASE("io: layers saved from PyTorch match PyTorch's outputs on every instruction set",
          "[io][layers]") {
  const Fixture fixtures[] = {
      {"v1_book", Layout::kSelfAttentionV1, "", "v1_book.output.npy"},
      {"v1_b3", Layout::kSelfAttentionV1, "", "v1_b3.output.npy"},
      {"v2_bias_b3", Layout::kSelfAttentionV2, "", "v2_bias_b3.output.npy"},
      {"causal_b3", Layout::kCausalAttention, "", "causal_b3.output.npy"},
      {"causal_bias_b1", Layout::kCausalAttention, "", "causal_bias_b1.output.npy"},
      {"wrapper_bias_b3", Layout::kMultiHeadWrapper, "", "wrapper_bias_b3.output.npy"},
      {"wrapper_b1", Layout::kMultiHeadWrapper, "", "wrapper_b1.output.npy"},
      {"mha_b3", Layout::kMultiHeadAttention, "", "mha_b3.output.npy"},
      {"mha_bias_b1", Layout::kMultiHeadAttention, "", "mha_bias_b1.output.npy"},
      {"torch_mha_causal_b3", Layout::kTorchMultiheadAttention, "",
       "torch_mha_causal_b3.output.npy"},
      {"torch_mha_b1", Layout::kTorchMultiheadAttention, "", "torch_mha_b1.output.npy"},
      {"mha_f16", Layout::kMultiHeadAttention, "", "mha_f16.output.npy"},
      {"causal_bf16", Layout::kCausalAttention, "", "causal_bf16.output.npy"},
      {"gpt2_2layers", Layout::kGpt2, "h.0", "gpt2_2layers.h0.output.npy"},
      {"gpt2_2layers", Layout::kGpt2, "h.1.", "gpt2_2layers.h1.output.npy"},
  };
  for (const Fixture& f : fixtures) {
    CAPTURE(f.name, f.prefix);
    const SafetensorsFile file = open_fixture(f.name);
    LayerOptions options;
    options.prefix = f.prefix;
    auto layer = attn::io::load_layer(file, options);
    INFO(layer.status().to_string());
    REQUIRE(layer.ok());
    CHECK(layer->location.layout == f.layout);
    const Tensor x = read_fixture(std::string(f.name) + ".input.npy");
    const Tensor want = read_fixture(f.output);
    // The float64 reference agrees with PyTorch (checks the mapping, independent of kernels).
    auto ref = attn::reference::forward(
        [&] {
          LayerConfig c = layer->config;
          if (c.context_length == 0) c.context_length = x.shape()[-2];
          return c;
        }(),
        layer->weights, x.view());
    REQUIRE(ref.ok());
    CHECK(test::max_error(ref->values, want.values()) <= 1.0);
    for (const auto isa : test::supported_isas()) {
      CAPTURE(attn::to_string(isa));
      const Tensor got = run(layer.value(), x, isa);
      CHECK(got.shape().to_string() == want.shape().to_string());
      CHECK(test::max_error(got.values(), want.values()) <= 1.0);
    }
  }
}

TEST_CASE("io: layer configs come from the tensors, __metadata__ and the options", "[io][layers]") {
  auto wrapper = attn::io::load_layer(open_fixture("wrapper_bias_b3"));
  REQUIRE(wrapper.ok());
  CHECK(wrapper->config.variant == attn::Variant::kMultiHeadWrapper);
  CHECK(wrapper->config.num_heads == 3);
  CHECK(wrapper->config.d_in == 6);
  CHECK(wrapper->config.d_out == 9);
  CHECK(wrapper->config.context_length == 8);
  CHECK(wrapper->config.qkv_bias);
  CHECK(wrapper->config.causal());

  auto gpt2 = attn::io::load_layer(open_fixture("gpt2_2layers"), opts("h.1"));
  REQUIRE(gpt2.ok());
  CHECK(gpt2->location.prefix == "h.1.");
  CHECK(gpt2->config.context_length == 16);  // from the mask buffer h.1.attn.bias
  CHECK(gpt2->config.num_heads == 3);
  CHECK(gpt2->tensors.size() == 5);

  LayerOptions o;
  o.context_length = 100;
  auto causal = attn::io::load_layer(open_fixture("causal_b3"), o);
  REQUIRE(causal.ok());
  CHECK(causal->config.context_length == 100);
  CHECK(causal->config.causal());
  // A CausalAttention layer without its mask is a contradiction, refused with both named.
  o.causal = false;
  test::require_error(attn::io::load_layer(open_fixture("causal_b3"), o).status(),
                      ErrorCode::kInvalidArgument, {"variant causal contradicts mask none"});

  // Without metadata: the layout's defaults; context_length unknown (0).
  const SafetensorsFile bare =
      rewrite(open_fixture("v2_bias_b3"), [](auto&, auto& meta) { meta.clear(); });
  auto v2 = attn::io::load_layer(bare);
  REQUIRE(v2.ok());
  CHECK(v2->location.layout == Layout::kSelfAttentionV2);
  CHECK(v2->config.context_length == 0);
  CHECK_FALSE(v2->config.causal());
  CHECK(v2->config.qkv_bias);
}

TEST_CASE("io: layouts: forced, auto-detected, or found below a prefix", "[io][layers]") {
  const SafetensorsFile gpt2 = open_fixture("gpt2_2layers");
  test::require_error(attn::io::load_layer(gpt2).status(), ErrorCode::kInvalidArgument,
                      {"holds 2 attention layers", "'h.0.', 'h.1.'"});
  test::require_error(attn::io::load_layer(gpt2, opts("h.7")).status(), ErrorCode::kInvalidArgument,
                      {"no tensor name starts with prefix 'h.7.'"});
  test::require_error(attn::io::load_layer(gpt2, opts("h.0.ln_1")).status(),
                      ErrorCode::kInvalidArgument, {"found no", "under prefix 'h.0.ln_1.'"});

  // A single layer below a prefix is found without one; the prefix may also point at attn.
  const SafetensorsFile one = rewrite(gpt2, [](auto& t, auto&) {
    std::erase_if(t, [](const auto& p) { return p.first.starts_with("h.1."); });
  });
  auto found = attn::io::find_layer(one);
  REQUIRE(found.ok());
  CHECK(found->prefix == "h.0.");
  CHECK(found->layout == Layout::kGpt2);
  auto at_attn = attn::io::load_layer(one, opts("h.0.attn"));
  REQUIRE(at_attn.ok());
  CHECK(at_attn->config.context_length == 16);

  // Forcing a layout the file does not have names the tensors it looked for.
  const SafetensorsFile causal = open_fixture("causal_b3");
  test::require_error(attn::io::load_layer(causal, opts("", Layout::kGpt2)).status(),
                      ErrorCode::kInvalidArgument,
                      {"found no layer of layout gpt2", "c_attn.weight"});
  // Forcing v2 onto a CausalAttention file reads it as v2 (mask ignored, not causal by layout).
  LayerOptions v2_options = opts("", Layout::kSelfAttentionV2);
  v2_options.causal = false;
  auto as_v2 = attn::io::load_layer(causal, v2_options);
  REQUIRE(as_v2.ok());
  CHECK(as_v2->config.variant == attn::Variant::kSelfAttentionV2);

  // One head of the wrapper, read as a CausalAttention.
  auto head = attn::io::load_layer(open_fixture("wrapper_bias_b3"), opts("heads.2"));
  REQUIRE(head.ok());
  CHECK(head->location.layout == Layout::kCausalAttention);
  CHECK(head->config.d_out == 3);

  // __metadata__["layout"] decides when the names are ambiguous, and must be a known name.
  const SafetensorsFile no_mask = rewrite(causal, [](auto& t, auto&) { drop(t, "mask"); });
  auto by_meta = attn::io::load_layer(no_mask);
  REQUIRE(by_meta.ok());
  CHECK(by_meta->location.layout == Layout::kCausalAttention);
  const SafetensorsFile bad_layout =
      rewrite(causal, [](auto&, auto& m) { m["layout"] = "transformer"; });
  test::require_error(attn::io::load_layer(bad_layout).status(), ErrorCode::kCorruptData,
                      {"__metadata__['layout']", "unknown layout 'transformer'"});

  const SafetensorsFile nothing = rewrite(causal, [](auto& t, auto& m) {
    t.clear();
    t.emplace_back("embedding.weight", Tensor(Shape{2, 2}));
    m.erase("layout");
  });
  test::require_error(attn::io::load_layer(nothing).status(), ErrorCode::kInvalidArgument,
                      {"found no attention layer", "'embedding.weight'"});
  CHECK(attn::io::parse_layout("torch-mha").value() == Layout::kTorchMultiheadAttention);
  CHECK(std::string(attn::io::to_string(Layout::kGpt2)) == "gpt2");
  test::require_error(attn::io::parse_layout("bert").status(), ErrorCode::kInvalidArgument,
                      {"expected one of"});
}

TEST_CASE("io: num_heads must be given for GPT-2 when the file does not record it",
          "[io][layers]") {
  const SafetensorsFile gpt2 =
      rewrite(open_fixture("gpt2_2layers"), [](auto&, auto& m) { m.clear(); });
  test::require_error(attn::io::load_layer(gpt2, opts("h.1")).status(), ErrorCode::kInvalidArgument,
                      {"num_heads is not recorded", "layout gpt2", "--heads"});
  auto layer = attn::io::load_layer(gpt2, heads(3, "h.1"));
  REQUIRE(layer.ok());
  const Tensor x = read_fixture("gpt2_2layers.input.npy");
  CHECK(test::max_error(run(layer.value(), x, attn::Isa::kAuto).values(),
                        read_fixture("gpt2_2layers.h1.output.npy").values()) <= 1.0);
  // A wrong head count gives a wrong answer, so the check above can fail.
  auto wrong = attn::io::load_layer(gpt2, heads(2, "h.1"));
  REQUIRE(wrong.ok());
  CHECK(test::max_error(run(wrong.value(), x, attn::Isa::kAuto).values(),
                        read_fixture("gpt2_2layers.h1.output.npy").values()) > 1.0);
}

TEST_CASE("io: shape mismatches with the config are reported with the tensor names",
          "[io][layers]") {
  const SafetensorsFile mha = open_fixture("mha_b3");  // d_in 7, d_out 6, 3 heads
  test::require_error(
      attn::io::load_layer(mha, heads(4)).status(), ErrorCode::kInvalidArgument,
      {"mha_b3.safetensors", "layout mha", "d_out = 6 is not divisible by num_heads = 4"});
  test::require_error(attn::io::load_layer(open_fixture("causal_b3"), heads(5)).status(),
                      ErrorCode::kInvalidArgument,
                      {"variant causal has one head, not num_heads = 5"});
  test::require_error(attn::io::load_layer(open_fixture("wrapper_bias_b3"), heads(2)).status(),
                      ErrorCode::kInvalidArgument,
                      {"num_heads = 2 was given but the file has 3 heads"});

  auto edited = [&](const Edit& e) { return attn::io::load_layer(rewrite(mha, e)).status(); };
  test::require_error(edited([](auto& t, auto&) { drop(t, "W_value.weight"); }),
                      ErrorCode::kInvalidArgument,
                      {"edited.safetensors", "needs tensor 'W_value.weight', which is missing"});
  test::require_error(edited([](auto& t, auto&) { drop(t, "out_proj.weight"); }),
                      ErrorCode::kInvalidArgument, {"layout mha", "out_proj.weight"});
  test::require_error(
      edited([](auto& t, auto&) {
        find(t, "W_key.weight") = Tensor(Shape{6, 5});
      }),
      ErrorCode::kInvalidArgument,
      {"tensor 'W_key.weight' has shape [6, 5], expected [6, 7] like 'W_query.weight'"});
  test::require_error(edited([](auto& t, auto&) {
                        find(t, "out_proj.weight") = Tensor(Shape{6, 7});
                      }),
                      ErrorCode::kInvalidArgument,
                      {"'out_proj.weight' has shape [6, 7], expected [6, 6]"});
  test::require_error(edited([](auto& t, auto&) { find(t, "W_query.weight") = Tensor(Shape{42}); }),
                      ErrorCode::kInvalidArgument,
                      {"'W_query.weight' has shape [42], expected [d_out, d_in]"});
  test::require_error(
      edited([](auto& t, auto&) { t.emplace_back("W_query.bias", Tensor(Shape{6})); }),
      ErrorCode::kInvalidArgument, {"needs tensor 'W_key.bias'"});
  test::require_error(edited([](auto& t, auto&) { find(t, "mask").data()[1] = 0; }),
                      ErrorCode::kUnsupported,
                      {"tensor 'mask' is not the causal mask", "element [0, 1] is 0"});
  test::require_error(edited([](auto& t, auto&) {
                        find(t, "mask") = Tensor(Shape{3, 4});
                      }),
                      ErrorCode::kInvalidArgument, {"'mask' has shape [3, 4]"});
  test::require_error(edited([](auto&, auto& m) { m["num_heads"] = "three"; }),
                      ErrorCode::kCorruptData,
                      {"__metadata__['num_heads'] = 'three' is not a positive integer"});
  test::require_error(edited([](auto&, auto& m) { m["num_heads"] = "0"; }), ErrorCode::kCorruptData,
                      {"not a positive integer"});
  test::require_error(edited([](auto&, auto& m) { m["causal"] = "yes"; }), ErrorCode::kCorruptData,
                      {"__metadata__['causal'] = 'yes' is not true or false"});
}

TEST_CASE("io: wrapper, nn.MultiheadAttention and GPT-2 files with missing or odd tensors",
          "[io][layers]") {
  const SafetensorsFile wrapper = open_fixture("wrapper_bias_b3");
  auto w_err = [&](const Edit& e) { return attn::io::load_layer(rewrite(wrapper, e)).status(); };
  test::require_error(w_err([](auto& t, auto&) { drop(t, "heads.1.W_query.weight"); }),
                      ErrorCode::kInvalidArgument,
                      {"belongs to head 1", "'heads.1.W_query.weight' is missing"});
  test::require_error(w_err([](auto& t, auto&) {
                        find(t, "heads.2.W_key.weight") = Tensor(Shape{4, 6});
                      }),
                      ErrorCode::kInvalidArgument, {"heads.2.W_key.weight", "[4, 6]"});
  test::require_error(
      w_err([](auto& t, auto&) {
        for (const char* n : {"heads.1.W_query.bias", "heads.1.W_key.bias", "heads.1.W_value.bias"})
          drop(t, n);
      }),
      ErrorCode::kInvalidArgument, {"head 1 differs from head 0"});
  test::require_error(w_err([](auto& t, auto&) {
                        find(t, "heads.1.mask") = Tensor(Shape{5, 5});
                      }),
                      ErrorCode::kUnsupported, {"heads.1.mask", "not the causal mask"});

  const SafetensorsFile mha = open_fixture("torch_mha_causal_b3");
  auto m_err = [&](const Edit& e) { return attn::io::load_layer(rewrite(mha, e)).status(); };
  test::require_error(m_err([](auto& t, auto&) {
                        t.emplace_back("bias_k", Tensor(Shape{1, 1, 8}));
                      }),
                      ErrorCode::kUnsupported, {"add_bias_kv"});
  test::require_error(m_err([](auto& t, auto&) {
                        find(t, "in_proj_weight") = Tensor(Shape{16, 8});
                      }),
                      ErrorCode::kInvalidArgument,
                      {"'in_proj_weight' has shape [16, 8], expected [24, 8]"});
  test::require_error(m_err([](auto& t, auto&) { find(t, "in_proj_bias") = Tensor(Shape{8}); }),
                      ErrorCode::kInvalidArgument, {"'in_proj_bias' has shape [8], expected [24]"});
  test::require_error(m_err([](auto&, auto& m) { m.erase("num_heads"); }),
                      ErrorCode::kInvalidArgument, {"num_heads is not recorded", "torch-mha"});

  const SafetensorsFile gpt2 = open_fixture("gpt2_2layers");
  auto g_err = [&](const Edit& e) {
    return attn::io::load_layer(rewrite(gpt2, e), opts("h.0")).status();
  };
  test::require_error(g_err([](auto& t, auto&) {
                        find(t, "h.0.attn.c_attn.weight") = Tensor(Shape{12, 35});
                      }),
                      ErrorCode::kInvalidArgument,
                      {"'h.0.attn.c_attn.weight' has shape [12, 35], expected [d, 3 * d]"});
  test::require_error(g_err([](auto& t, auto&) { drop(t, "h.0.attn.c_proj.weight"); }),
                      ErrorCode::kInvalidArgument, {"needs tensor 'h.0.attn.c_proj.weight'"});
  test::require_error(g_err([](auto& t, auto&) {
                        find(t, "h.0.attn.bias") = Tensor(Shape{1, 1, 4, 4});
                      }),
                      ErrorCode::kUnsupported,
                      {"'h.0.attn.bias' is not the causal mask tril(ones(n, n))"});
}
