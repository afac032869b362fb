// 16-bit weights kept from safetensors files (io::LayerOptions::keep_16bit): the bits are the
// file's, rearranged by each layout as float32 values are, and engines packed from them give
// the same output bit for bit as engines packed from a float32 load.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "attn/c_api.h"
#include "attn/chapter/reference.hpp"
#include "attn/engine.hpp"
#include "attn/layer.hpp"
#include "attn/safetensors.hpp"
#include "engine_fixture.hpp"
#include "helpers.hpp"

namespace {

using attn::DType;
using attn::Shape;
using attn::Tensor;

// One layer's tensors as a layout names them, with the options the file does not give.
struct LayoutCase {
  const char* name;
  attn::io::Layout layout;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::int64_t num_heads = 1;
};

Tensor random_tensor(Shape shape, std::uint64_t seed) {
  return Tensor(shape, test::random_floats(static_cast<std::size_t>(shape.numel()), seed));
}

// triu(ones(n, n), 1) ([n, n], the chapter's) or tril(ones) ([1, 1, n, n], GPT-2's).
Tensor causal_mask(std::int64_t n, bool gpt2) {
  Tensor m(gpt2 ? Shape{1, 1, n, n} : Shape{n, n});
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) m.data()[i * n + j] = (gpt2 ? j <= i : j > i) ? 1.f : 0.f;
  return m;
}

constexpr std::int64_t kD = 8, kContext = 5;

std::vector<LayoutCase> layout_cases() {
  using L = attn::io::Layout;
  std::uint64_t seed = 1;
  auto r = [&](Shape s) { return random_tensor(s, seed++); };
  std::vector<LayoutCase> cases;
  cases.push_back({"v1",
                   L::kSelfAttentionV1,
                   {{"W_query", r({kD, 6})}, {"W_key", r({kD, 6})}, {"W_value", r({kD, 6})}}});
  cases.push_back({"causal",
                   L::kCausalAttention,
                   {{"W_query.weight", r({6, kD})},
                    {"W_query.bias", r({6})},
                    {"W_key.weight", r({6, kD})},
                    {"W_key.bias", r({6})},
                    {"W_value.weight", r({6, kD})},
                    {"W_value.bias", r({6})},
                    {"mask", causal_mask(kContext, false)}}});
  LayoutCase wrapper{"wrapper", L::kMultiHeadWrapper, {}, 2};
  for (int h = 0; h < 2; ++h) {
    const std::string p = "heads." + std::to_string(h) + ".";
    for (const char* m : {"W_query", "W_key", "W_value"}) {
      wrapper.tensors.push_back({p + m + ".weight", r({3, kD})});
      wrapper.tensors.push_back({p + m + ".bias", r({3})});
    }
  }
  cases.push_back(std::move(wrapper));
  cases.push_back({"mha",
                   L::kMultiHeadAttention,
                   {{"W_query.weight", r({kD, kD})},
                    {"W_key.weight", r({kD, kD})},
                    {"W_value.weight", r({kD, kD})},
                    {"out_proj.weight", r({kD, kD})},
                    {"out_proj.bias", r({kD})}},
                   2});
  cases.push_back({"torch-mha",
                   L::kTorchMultiheadAttention,
                   {{"in_proj_weight", r({3 * kD, kD})},
                    {"in_proj_bias", r({3 * kD})},
                    {"out_proj.weight", r({kD, kD})},
                    {"out_proj.bias", r({kD})}},
                   2});
  cases.push_back({"gpt2",
                   L::kGpt2,
                   {{"attn.c_attn.weight", r({kD, 3 * kD})},
                    {"attn.c_attn.bias", r({3 * kD})},
                    {"attn.c_proj.weight", r({kD, kD})},
                    {"attn.c_proj.bias", r({kD})},
                    {"attn.bias", causal_mask(kContext, true)}},
                   2});
  cases.push_back({"hf-llama",  // 4 heads of 2, 2 kv heads
                   L::kHfLlama,
                   {{"q_proj.weight", r({kD, kD})},
                    {"k_proj.weight", r({4, kD})},
                    {"v_proj.weight", r({4, kD})},
                    {"o_proj.weight", r({kD, kD})}},
                   4});
  cases.push_back({"gpt-neox",
                   L::kGptNeox,
                   {{"query_key_value.weight", r({3 * kD, kD})},
                    {"query_key_value.bias", r({3 * kD})},
                    {"dense.weight", r({kD, kD})},
                    {"dense.bias", r({kD})}},
                   2});
  return cases;
}

// The file of `c`'s tensors stored as `dtype` (every tensor, masks and biases included).
attn::io::SafetensorsFile file_of(const LayoutCase& c, attn::io::DType dtype) {
  std::vector<attn::io::NamedTensor> named;
  for (const auto& [name, t] : c.tensors) named.push_back({name, t.view()});
  auto bytes = attn::io::encode_safetensors(named, {}, dtype);
  REQUIRE(bytes.ok());
  auto file = attn::io::SafetensorsFile::from_bytes(bytes.value(), c.name);
  REQUIRE(file.ok());
  return file.value();
}

attn::io::Layer load(const attn::io::SafetensorsFile& file, const LayoutCase& c,
                     std::optional<DType> keep) {
  attn::io::LayerOptions o;
  o.layout = c.layout;
  o.num_heads = c.num_heads;
  o.context_length = kContext;
  o.keep_16bit = keep;
  auto layer = attn::io::load_layer(file, o);
  INFO(layer.status().to_string());
  REQUIRE(layer.ok());
  return std::move(layer.value());
}

const Tensor* weight_matrices(const attn::Weights& w, int i) {
  const Tensor* all[] = {&w.w_query, &w.w_key, &w.w_value, &w.w_out};
  return all[i];
}

std::vector<float> run(const attn::io::Layer& layer, DType weight_dtype, attn::Isa isa) {
  attn::RunOptions o;
  o.isa = isa;
  o.backend = attn::Backend::kSerial;
  o.weight_dtype = weight_dtype;
  auto e = attn::Engine::create(layer.config, layer.weights, o);
  INFO(e.status().to_string());
  REQUIRE(e.ok());
  const Tensor x = random_tensor(Shape{2, kContext, layer.config.d_in}, 99);
  Tensor y(Shape{2, kContext, layer.config.d_out});
  REQUIRE(e->forward(x.view(), y.view()).ok());
  return y.values();
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("16-bit tensors: from_bits, to_f32 and what holds no floats", "[io][dtype][load16]") {
  auto t = Tensor::from_bits(Shape{2, 2}, DType::kBf16, {0x3F80, 0xC000, 0x0000, 0x7F80});
  REQUIRE(t.ok());
  CHECK(t->dtype() == DType::kBf16);
  CHECK(t->numel() == 4);
  CHECK_FALSE(t->empty());
  CHECK(t->data() == nullptr);
  CHECK(t->values().empty());
  const Tensor f = t->to_f32();
  CHECK(f.dtype() == DType::kF32);
  CHECK(f.values() == std::vector<float>{1.0f, -2.0f, 0.0f, INFINITY});
  auto h = Tensor::from_bits(Shape{2}, DType::kF16, {0x3C00, 0x0001});  // 1, smallest subnormal
  REQUIRE(h.ok());
  CHECK(h->to_f32().values() == std::vector<float>{1.0f, 0x1p-24f});
  CHECK(Tensor(Shape{3}, DType::kF16).bits().size() == 3);

  auto wrong_size = Tensor::from_bits(Shape{3}, DType::kBf16, {1, 2});
  REQUIRE_FALSE(wrong_size.ok());
  CHECK_THAT(wrong_size.status().message(), Catch::Contains("2 elements for shape [3]"));
  auto wrong_type = Tensor::from_bits(Shape{1}, DType::kInt8, {1});
  REQUIRE_FALSE(wrong_type.ok());
  CHECK_THAT(wrong_type.status().message(), Catch::Contains("int8 is not bf16 or f16"));
}

TEST_CASE("keep_16bit keeps the file's bits, rearranged as each layout rearranges floats",
          "[io][dtype][load16]") {
  for (const LayoutCase& c : layout_cases()) {
    for (const auto& [file_type, type] :
         {std::pair{attn::io::DType::kBF16, DType::kBf16}, {attn::io::DType::kF16, DType::kF16}}) {
      INFO("layout " << c.name << ", file " << attn::io::to_string(file_type));
      const attn::io::SafetensorsFile file = file_of(c, file_type);
      const attn::io::Layer f32 = load(file, c, std::nullopt);
      const attn::io::Layer kept = load(file, c, type);
      CHECK(kept.config.d_in == f32.config.d_in);
      CHECK(kept.config.d_out == f32.config.d_out);
      CHECK(kept.tensors == f32.tensors);
      for (int i = 0; i < 4; ++i) {
        const Tensor& want = *weight_matrices(f32.weights, i);
        const Tensor& got = *weight_matrices(kept.weights, i);
        INFO("weight matrix " << i);
        CHECK(got.shape() == want.shape());
        if (want.empty()) {
          CHECK(got.empty());
          continue;
        }
        // The f32 load widened the file's bits exactly: equal values mean equal bits.
        CHECK(got.dtype() == type);
        CHECK(got.to_f32().values() == want.values());
      }
      for (const Tensor* b :
           {&kept.weights.b_query, &kept.weights.b_key, &kept.weights.b_value, &kept.weights.b_out})
        CHECK(b->dtype() == DType::kF32);

      // The other 16-bit type, or none, is read as float32.
      const DType other = type == DType::kBf16 ? DType::kF16 : DType::kBf16;
      for (std::optional<DType> keep : {std::optional<DType>(other), std::optional(DType::kF32)})
        CHECK(load(file, c, keep).weights.w_query.dtype() == DType::kF32);
    }
  }
}

TEST_CASE("keep_16bit: GPT-2's Conv1D bits are transposed straight from the file",
          "[io][dtype][load16]") {
  const LayoutCase c = layout_cases()[5];
  REQUIRE(std::string(c.name) == "gpt2");
  const attn::io::SafetensorsFile file = file_of(c, attn::io::DType::kBF16);
  const attn::io::Layer kept = load(file, c, DType::kBf16);
  const auto raw = file.raw(*file.find("attn.c_attn.weight"));
  std::vector<std::uint16_t> stored(raw.size() / 2);  // [d, 3d], q|k|v along the columns
  std::memcpy(stored.data(), raw.data(), raw.size());
  const Tensor* qkv[] = {&kept.weights.w_query, &kept.weights.w_key, &kept.weights.w_value};
  for (int part = 0; part < 3; ++part) {
    for (std::int64_t j = 0; j < kD; ++j)
      for (std::int64_t i = 0; i < kD; ++i)
        REQUIRE(qkv[part]->bits()[j * kD + i] == stored[i * 3 * kD + part * kD + j]);
  }
}

TEST_CASE("engines from 16-bit loads equal engines from float32 loads bit for bit",
          "[io][dtype][load16]") {
  for (const LayoutCase& c : layout_cases()) {
    for (const auto& [file_type, type] :
         {std::pair{attn::io::DType::kBF16, DType::kBf16}, {attn::io::DType::kF16, DType::kF16}}) {
      const attn::io::SafetensorsFile file = file_of(c, file_type);
      const attn::io::Layer f32 = load(file, c, std::nullopt);
      const attn::io::Layer kept = load(file, c, type);
      for (const attn::Isa isa : test::supported_isas()) {
        // The kept type (packed as is), f32 (widened) and the other 16-bit type (rounded).
        for (const DType weight_dtype : {type, DType::kF32, DType::kBf16, DType::kF16}) {
          INFO("layout " << c.name << ", file " << attn::io::to_string(file_type) << ", isa "
                         << attn::to_string(isa) << ", weight_dtype "
                         << attn::to_string(weight_dtype));
          CHECK(same_bits(run(kept, weight_dtype, isa), run(f32, weight_dtype, isa)));
        }
      }
      // The float64 oracle reads the widened values.
      const Tensor x = random_tensor(Shape{1, kContext, f32.config.d_in}, 7);
      auto want = attn::reference::forward(f32.config, f32.weights, x.view());
      auto got = attn::reference::forward(kept.config, kept.weights, x.view());
      REQUIRE(want.ok());
      REQUIRE(got.ok());
      CHECK(got->values == want->values);
    }
  }
}

TEST_CASE("engines take mixed float32 and 16-bit parts and refuse 16-bit biases",
          "[io][dtype][load16]") {
  attn::LayerConfig config;
  config.variant = attn::Variant::kMultiHeadAttention;
  config.d_in = config.d_out = kD;
  config.num_heads = 2;
  config.context_length = kContext;
  config.qkv_bias = true;
  auto narrowed = [](const Tensor& t, DType type) {
    std::vector<std::uint16_t> bits;
    for (float v : t.values()) {
      const auto x = std::bit_cast<std::uint32_t>(v);
      bits.push_back(type == DType::kBf16 ? static_cast<std::uint16_t>(x >> 16)  // truncated
                                          : static_cast<std::uint16_t>(0x3C00 + (x >> 22) % 512));
    }
    return Tensor::from_bits(t.shape(), type, std::move(bits)).value();
  };
  attn::io::Layer mixed, widened;
  auto w = [](std::uint64_t seed) { return random_tensor(Shape{kD, kD}, seed); };
  mixed.config = widened.config = config;
  mixed.weights.w_query = narrowed(w(1), DType::kBf16);
  mixed.weights.w_key = w(2);
  mixed.weights.w_value = narrowed(w(3), DType::kF16);
  mixed.weights.w_out = narrowed(w(4), DType::kBf16);
  for (Tensor* b :
       {&mixed.weights.b_query, &mixed.weights.b_key, &mixed.weights.b_value, &mixed.weights.b_out})
    *b = random_tensor(Shape{kD}, 5);
  widened.weights = mixed.weights;
  for (Tensor* t : {&widened.weights.w_query, &widened.weights.w_value, &widened.weights.w_out})
    *t = t->to_f32();
  for (const attn::Isa isa : test::supported_isas()) {
    for (const DType weight_dtype : {DType::kF32, DType::kBf16, DType::kF16}) {
      INFO("isa " << attn::to_string(isa) << ", weight_dtype " << attn::to_string(weight_dtype));
      CHECK(same_bits(run(mixed, weight_dtype, isa), run(widened, weight_dtype, isa)));
    }
  }

  SECTION("a bf16 weight beyond f16's range names the element") {
    std::vector<std::uint16_t> bits(kD * kD, 0x3F80);  // 1.0
    bits[kD + 2] = 0x47C3;                             // 99840
    mixed.weights.w_query = Tensor::from_bits(Shape{kD, kD}, DType::kBf16, bits).value();
    attn::RunOptions o;
    o.weight_dtype = DType::kF16;
    auto e = attn::Engine::create(mixed.config, mixed.weights, o);
    REQUIRE_FALSE(e.ok());
    CHECK_THAT(e.status().message(),
               Catch::Contains("weight w_query[1, 2] = 99840 is beyond the range of weight_dtype "
                               "f16"));
  }
  SECTION("a 16-bit bias is refused, named") {
    mixed.weights.b_key =
        Tensor::from_bits(Shape{kD}, DType::kBf16, std::vector<std::uint16_t>(kD, 0x3F80)).value();
    auto e = attn::Engine::create(mixed.config, mixed.weights, {});
    REQUIRE_FALSE(e.ok());
    CHECK(e.status().code() == attn::ErrorCode::kInvalidArgument);
    CHECK_THAT(e.status().message(),
               Catch::Contains("weight b_key is bf16: biases must be f32 (Tensor::to_f32"));
  }
}

TEST_CASE("attn_engine_load with a 16-bit weight_dtype equals the engine of a float32 load",
          "[io][dtype][load16][c_api]") {
  for (const auto& [fixture, type, c_type] :
       {std::tuple{"causal_bf16", DType::kBf16, ATTN_DTYPE_BF16},
        std::tuple{"mha_f16", DType::kF16, ATTN_DTYPE_F16}}) {
    INFO(fixture);
    const std::string path = std::string(ATTN_TEST_DATA_DIR) + "/" + fixture + ".safetensors";
    auto file = attn::io::SafetensorsFile::open(path);
    REQUIRE(file.ok());
    auto layer = attn::io::load_layer(file.value());
    REQUIRE(layer.ok());
    attn::RunOptions o;
    o.weight_dtype = type;
    auto want_engine = attn::Engine::create(layer->config, layer->weights, o);
    REQUIRE(want_engine.ok());
    const std::int64_t seq = std::min<std::int64_t>(layer->config.context_length, 4);
    const Tensor x = random_tensor(Shape{1, seq, layer->config.d_in}, 11);
    Tensor want(Shape{1, seq, layer->config.d_out}), got(want.shape());
    REQUIRE(want_engine->forward(x.view(), want.view()).ok());

    attn_run_options c_options = ATTN_RUN_OPTIONS_INIT;
    c_options.weight_dtype = c_type;
    attn_engine* engine = nullptr;
    REQUIRE(attn_engine_load(path.c_str(), nullptr, &c_options, &engine) == ATTN_OK);
    const attn_status status = attn_forward(engine, x.data(), 1, seq, got.data());
    attn_engine_free(engine);
    REQUIRE(status == ATTN_OK);
    CHECK(same_bits(got.values(), want.values()));
  }
}
