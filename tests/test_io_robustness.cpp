// Truncated and randomly mutated copies of the fixtures: every one gives a Status (an error
// or a valid file), never a crash or an out-of-bounds read (run under ASan to see the latter).
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "attn/layer.hpp"
#include "attn/npy.hpp"
#include "attn/safetensors.hpp"
#include "io_helpers.hpp"

namespace {

std::vector<std::byte> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(!chars.empty());
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

// Changes 1-4 bytes, mostly in the first `hot` bytes (the header), often to JSON punctuation
// or digits so that the parser sees plausible but wrong headers.
void mutate(std::vector<std::byte>& bytes, std::size_t hot, std::mt19937& gen) {
  static constexpr char kInteresting[] = "{}[]\",:-0123456789eE. \xff";
  const int edits = 1 + static_cast<int>(gen() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t range = gen() % 5 != 0 ? std::min(hot, bytes.size()) : bytes.size();
    const std::size_t at = gen() % range;
    bytes[at] = gen() % 2 ? static_cast<std::byte>(kInteresting[gen() % (sizeof kInteresting - 1)])
                          : static_cast<std::byte>(gen());
  }
}

// Exercises everything a user of the file would call.
void use(const attn::io::SafetensorsFile& file) {
  for (const auto& t : file.tensors()) {
    auto r = file.read(t.name);
    if (r.ok()) {
      CHECK(static_cast<std::uint64_t>(r->numel()) * attn::io::dtype_size(t.dtype) == t.size_bytes);
    }
  }
  auto layer = attn::io::load_layer(file);
  if (!layer.ok()) CHECK(!layer.status().message().empty());
}

}  // namespace

TEST_CASE("io: every truncation of a safetensors file is refused", "[io][robustness]") {
  for (const char* name :
       {"gpt2_2layers.safetensors", "mha_f16.safetensors", "v1_book.safetensors"}) {
    CAPTURE(name);
    const std::vector<std::byte> bytes = read_bytes(test::data_path(name));
    REQUIRE(attn::io::SafetensorsFile::from_bytes(bytes).ok());
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      auto file = attn::io::SafetensorsFile::from_bytes(std::span(bytes).first(n));
      CAPTURE(n);
      REQUIRE_FALSE(file.ok());
      CHECK(file.status().code() == attn::ErrorCode::kCorruptData);
    }
  }
}

TEST_CASE("io: mutated safetensors files give a Status, never a crash", "[io][robustness]") {
  std::mt19937 gen(2024);
  int valid = 0, total = 0;
  for (const char* name :
       {"gpt2_2layers.safetensors", "wrapper_bias_b3.safetensors", "mha_f16.safetensors"}) {
    const std::vector<std::byte> original = read_bytes(test::data_path(name));
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, original.data(), 8);
    for (int i = 0; i < 1500; ++i) {
      std::vector<std::byte> bytes = original;
      mutate(bytes, 8 + header_len, gen);
      auto file = attn::io::SafetensorsFile::from_bytes(bytes, name);
      ++total;
      if (!file.ok()) {
        CHECK(file.status().message().find(name) != std::string::npos);
        continue;
      }
      ++valid;
      use(file.value());
    }
  }
  // Both outcomes must occur, or the mutations test nothing.
  CAPTURE(valid, total);
  CHECK(valid > 0);
  CHECK(valid < total);
}

TEST_CASE("io: truncated and mutated .npy files give a Status, never a crash", "[io][robustness]") {
  const std::vector<std::byte> original = read_bytes(test::data_path("mha_b3.input.npy"));
  for (std::size_t n = 0; n < original.size(); ++n) {
    REQUIRE_FALSE(attn::io::parse_npy(std::span(original).first(n)).ok());
  }
  std::mt19937 gen(7);
  int valid = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::byte> bytes = original;
    mutate(bytes, 128, gen);
    auto t = attn::io::parse_npy(bytes);
    if (t.ok()) {
      ++valid;
      CHECK(t->numel() * 4 + 128 == static_cast<std::int64_t>(bytes.size()));
    }
  }
  CHECK(valid > 0);
}
