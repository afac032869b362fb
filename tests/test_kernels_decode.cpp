// Decode kernels (fixed chunks of keys, then an in-order merge) against the float64 twin on
// every supported ISA.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

// Decodes one query against n keys: chunks of kDecodeChunk, then the merge.
std::vector<float> decode(k::Isa isa, const std::vector<float>& q, const float* kp, const float* vp,
                          std::ptrdiff_t ld, std::size_t n, std::size_t head_dim, float scale) {
  const std::size_t chunks = (n + k::kDecodeChunk - 1) / k::kDecodeChunk;
  std::vector<float> partial_out(chunks * head_dim, -3.0f);
  std::vector<k::DecodePartial> partials(chunks);
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t j0 = c * k::kDecodeChunk;
    k::decode_chunk(isa, q.data(), kp + j0 * ld, ld, vp + j0 * ld, ld,
                    std::min(k::kDecodeChunk, n - j0), head_dim, scale, &partial_out[c * head_dim],
                    &partials[c]);
  }
  std::vector<float> out(head_dim, -5.0f);
  k::decode_merge(isa, partial_out.data(), partials.data(), chunks, head_dim, out.data());
  return out;
}

}  // namespace

TEST_CASE("decode chunks + merge match the reference", "[kernels][decode]") {
  const auto n = GENERATE(1, 5, 17, 511, 512, 513, 1000, 2055);
  const auto head_dim = GENERATE(1, 3, 64, 80, 128);
  CAPTURE(n, head_dim);
  const std::size_t ld =
      2 * head_dim + 1;  // K at column 0, V at column head_dim: strided, unaligned
  const auto q = test::random_floats(head_dim, 3 * n + head_dim);
  const auto kv = test::random_floats(n * ld, 5 * n + head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<double> want(head_dim);
  k::reference::decode(q.data(), kv.data(), ld, kv.data() + head_dim, ld, n, head_dim, scale,
                       want.data());
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    REQUIRE(test::max_error(decode(isa, q, kv.data(), kv.data() + head_dim, ld, n, head_dim, scale),
                            want) <= 1.0);
  }
}

TEST_CASE("decode with large logits", "[kernels][decode]") {
  const auto n = GENERATE(100, 1500);
  const std::size_t head_dim = 64, ld = 2 * head_dim;
  CAPTURE(n);
  const auto q = test::random_floats(head_dim, 11, -3.0f, 3.0f);
  const auto kv = test::random_floats(n * ld, 12, -3.0f, 3.0f);
  std::vector<double> want(head_dim);
  k::reference::decode(q.data(), kv.data(), ld, kv.data() + head_dim, ld, n, head_dim, 0.125f,
                       want.data());
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    REQUIRE(test::max_error(
                decode(isa, q, kv.data(), kv.data() + head_dim, ld, n, head_dim, 0.125f), want) <=
            1.0);
  }
}

TEST_CASE("decode: a NaN key poisons the output, the merge of nothing is 0", "[kernels][decode]") {
  const std::size_t head_dim = 64, n = 1200, ld = 2 * head_dim;
  const auto q = test::random_floats(head_dim, 1);
  auto kv = test::random_floats(n * ld, 2);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    auto bad = kv;
    bad[700 * ld + 5] = std::numeric_limits<float>::quiet_NaN();  // one key, second chunk
    for (float x : decode(isa, q, bad.data(), bad.data() + head_dim, ld, n, head_dim, 0.125f))
      REQUIRE(std::isnan(x));
    // Every score NaN in one chunk: that chunk's max is -inf after NaN-dropping maxima, and
    // the NaN must still reach the output through its sum.
    auto all_bad = kv;
    for (std::size_t j = 512; j < 1024; ++j)
      all_bad[j * ld] = std::numeric_limits<float>::quiet_NaN();
    for (float x :
         decode(isa, q, all_bad.data(), all_bad.data() + head_dim, ld, n, head_dim, 0.125f))
      REQUIRE(std::isnan(x));
    std::vector<float> out(head_dim, 1.0f);
    k::decode_merge(isa, nullptr, nullptr, 0, head_dim, out.data());
    for (float x : out) REQUIRE(x == 0.0f);
  }
}

TEST_CASE("decode merge: one chunk is its own normalised output, chunk order is fixed",
          "[kernels][decode]") {
  const std::size_t head_dim = 80, n = 7 * k::kDecodeChunk + 3, ld = head_dim;
  const auto q = test::random_floats(head_dim, 7);
  const auto kk = test::random_floats(n * ld, 8);
  const auto vv = test::random_floats(n * ld, 9);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> part(head_dim), out(head_dim);
    k::DecodePartial p;
    k::decode_chunk(isa, q.data(), kk.data(), ld, vv.data(), ld, 300, head_dim, 0.1f, part.data(),
                    &p);
    k::decode_merge(isa, part.data(), &p, 1, head_dim, out.data());
    std::vector<double> want(head_dim);
    k::reference::decode(q.data(), kk.data(), ld, vv.data(), ld, 300, head_dim, 0.1f, want.data());
    REQUIRE(test::max_error(out, want) <= 1.0);
    // Many chunks: the same bits on every run (no dependence on anything but the chunking).
    const auto a = decode(isa, q, kk.data(), vv.data(), ld, n, head_dim, 0.1f);
    const auto b = decode(isa, q, kk.data(), vv.data(), ld, n, head_dim, 0.1f);
    REQUIRE(std::memcmp(a.data(), b.data(), head_dim * sizeof(float)) == 0);
    std::vector<double> want_n(head_dim);
    k::reference::decode(q.data(), kk.data(), ld, vv.data(), ld, n, head_dim, 0.1f, want_n.data());
    REQUIRE(test::max_error(a, want_n) <= 1.0);
  }
}

TEST_CASE("grouped decode matches the reference; a row's bits do not depend on its group",
          "[kernels][decode][gqa]") {
  const auto n = GENERATE(1, 17, 128, 129, 511, 512);
  const auto head_dim = GENERATE(1, 3, 8, 16, 64, 80, 128);
  const auto rows = GENERATE(1, 2, 4, 7, 16);
  const bool with_mods = GENERATE(false, true);
  CAPTURE(n, head_dim, rows, with_mods);
  const std::size_t ld = 2 * head_dim + 1;
  const std::size_t ld_q = head_dim + 2;
  const auto q = test::random_floats(rows * ld_q, 7 * n + head_dim, -2.0f, 2.0f);
  const auto kv = test::random_floats(n * ld, 9 * n + head_dim, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<k::DecodeMods> mods(rows);
  for (int g = 0; g < rows; ++g) {
    mods[g].softcap = with_mods ? 3.0f : 0.0f;
    mods[g].alibi_slope = with_mods ? 0.5f / static_cast<float>(g + 1) : 0.0f;
    mods[g].key_offset = 1 - n;  // the query at the last key's position, as in the engine
  }
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    // Row g's output at stride ld_out (as the engine's slots), partials at stride 3.
    const std::size_t ld_out = head_dim + 5;
    std::vector<float> out(rows * ld_out, -9.0f);
    std::vector<k::DecodePartial> parts(rows * 3);
    k::decode_chunk_group(isa, q.data(), static_cast<std::ptrdiff_t>(ld_q), rows, kv.data(),
                          static_cast<std::ptrdiff_t>(ld), kv.data() + head_dim,
                          static_cast<std::ptrdiff_t>(ld), n, head_dim, scale, out.data(),
                          static_cast<std::ptrdiff_t>(ld_out), parts.data(), 3, mods.data());
    for (int g = 0; g < rows; ++g) {
      CAPTURE(g);
      // The row alone gives the same bits (so the engine's split of a group cannot matter).
      std::vector<float> one(head_dim);
      k::DecodePartial part;
      k::decode_chunk_group(isa, q.data() + g * ld_q, static_cast<std::ptrdiff_t>(ld_q), 1,
                            kv.data(), static_cast<std::ptrdiff_t>(ld), kv.data() + head_dim,
                            static_cast<std::ptrdiff_t>(ld), n, head_dim, scale, one.data(),
                            static_cast<std::ptrdiff_t>(head_dim), &part, 1, &mods[g]);
      REQUIRE(std::memcmp(one.data(), out.data() + g * ld_out, head_dim * sizeof(float)) == 0);
      REQUIRE(std::memcmp(&part, &parts[g * 3], sizeof part) == 0);
      // The merged row matches the float64 twin.
      std::vector<float> merged(head_dim);
      k::decode_merge(isa, out.data() + g * ld_out, &parts[g * 3], 1, head_dim, merged.data());
      std::vector<double> want(head_dim);
      k::reference::decode(q.data() + g * ld_q, kv.data(), static_cast<std::ptrdiff_t>(ld),
                           kv.data() + head_dim, static_cast<std::ptrdiff_t>(ld), n, head_dim,
                           scale, want.data(), mods[g]);
      REQUIRE(test::max_error(merged, want) <= 1.0);
    }
  }
}
