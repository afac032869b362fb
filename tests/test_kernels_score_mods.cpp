// Soft-capping and ALiBi (the score modifiers of kernels.hpp) in the fused kernel, the unfused
// softmax and decode, against their float64 twins on every supported ISA, over tail sizes.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

struct Mods {
  float softcap;
  float alibi_slope;
};
// Soft-capping alone (a cap the scores reach, and one far below them: saturated), ALiBi
// alone (a steep and a shallow slope), both.
const Mods kMods[] = {{5.0f, 0.0f}, {0.5f, 0.0f}, {0.0f, 0.5f}, {0.0f, 1.0f / 256}, {2.0f, 0.25f}};

// One head stored like the engine's activations (K at column 0, V at head_dim, odd stride).
struct Head {
  std::size_t seq_q, seq_kv, head_dim, ld;
  std::vector<float> q, kv;
};

Head make_head(std::size_t seq_q, std::size_t seq_kv, std::size_t head_dim, std::uint64_t seed) {
  Head h{seq_q, seq_kv, head_dim, 2 * head_dim + 3, {}, {}};
  // Amplitude 2: scores of a few units (so a cap of 5 bends them and 0.5 saturates them).
  h.q = test::random_floats(seq_q * h.ld, seed, -2.0f, 2.0f);
  h.kv = test::random_floats(seq_kv * h.ld, seed + 1, -2.0f, 2.0f);
  return h;
}

k::AttentionArgs args_of(Head& h, bool causal, std::size_t window, Mods m) {
  k::AttentionArgs a;
  a.q = h.q.data();
  a.ld_q = static_cast<std::ptrdiff_t>(h.ld);
  a.k = h.kv.data();
  a.v = h.kv.data() + h.head_dim;
  a.ld_k = a.ld_v = static_cast<std::ptrdiff_t>(h.ld);
  a.head_dim = h.head_dim;
  a.seq_len_q = h.seq_q;
  a.seq_len_kv = h.seq_kv;
  a.q_begin = 0;
  a.q_end = h.seq_q;
  a.scale = 1.0f / std::sqrt(static_cast<float>(h.head_dim));
  a.causal = causal;
  a.window = window;
  a.softcap = m.softcap;
  a.alibi_slope = m.alibi_slope;
  return a;
}

std::vector<float> run_flash(k::Isa isa, k::AttentionArgs a) {
  std::vector<float> out(a.seq_len_q * a.head_dim, -7.0f);
  std::vector<float> scratch(k::flash_attention_scratch_floats(isa, a.head_dim) + 16);
  auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  a.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
  a.out = out.data();
  a.ld_out = static_cast<std::ptrdiff_t>(a.head_dim);
  k::flash_attention_blocks(isa, a, 0,
                            k::flash_attention_block_count(isa, a.seq_len_q, a.head_dim));
  return out;
}

std::vector<double> reference(const k::AttentionArgs& a) {
  std::vector<double> want(a.seq_len_q * a.head_dim);
  k::reference::attention(a, want.data(), static_cast<std::ptrdiff_t>(a.head_dim));
  return want;
}

// Decodes one query (at position n - 1 + query_shift) against n keys at positions 0..n-1.
std::vector<float> decode(k::Isa isa, const float* q, const float* kp, const float* vp,
                          std::ptrdiff_t ld, std::size_t n, std::size_t head_dim, float scale,
                          Mods m, std::int64_t query_position) {
  const std::size_t chunks = (n + k::kDecodeChunk - 1) / k::kDecodeChunk;
  std::vector<float> partial_out(chunks * head_dim, -3.0f);
  std::vector<k::DecodePartial> partials(chunks);
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t j0 = c * k::kDecodeChunk;
    k::DecodeMods mods;
    mods.softcap = m.softcap;
    mods.alibi_slope = m.alibi_slope;
    mods.key_offset = static_cast<std::int64_t>(j0) - query_position;
    k::decode_chunk(isa, q, kp + j0 * ld, ld, vp + j0 * ld, ld, std::min(k::kDecodeChunk, n - j0),
                    head_dim, scale, &partial_out[c * head_dim], &partials[c], mods);
  }
  std::vector<float> out(head_dim, -5.0f);
  k::decode_merge(isa, partial_out.data(), partials.data(), chunks, head_dim, out.data());
  return out;
}

}  // namespace

TEST_CASE("flash attention with soft-capping and ALiBi matches the reference",
          "[kernels][attention][score_mods]") {
  const auto seq = GENERATE(1, 5, 17, 63, 64, 65, 127, 129, 200);
  const auto head_dim = GENERATE(1, 3, 64, 80, 128);
  const bool causal = GENERATE(false, true);
  for (const Mods m : kMods) {
    CAPTURE(seq, head_dim, causal, m.softcap, m.alibi_slope);
    Head h = make_head(seq, seq, head_dim, 31 * seq + head_dim);
    const auto a = args_of(h, causal, 0, m);
    const auto want = reference(a);
    for (const auto isa : test::supported_isas()) {
      CAPTURE(k::isa_name(isa));
      REQUIRE(test::max_error(run_flash(isa, a), want) <= 1.0);
    }
  }
}

TEST_CASE("flash attention with score modifiers: bottom-right positions, windows, masked NaN",
          "[kernels][attention][score_mods]") {
  // Fewer queries than keys (a session's prefill after cached keys): query i is at position
  // i + seq_kv - seq_q, which the ALiBi bias sees.
  const auto seq_q = GENERATE(1, 7, 33, 130);
  const auto seq_kv = GENERATE(130, 300);
  const std::size_t window = GENERATE(0, 50);
  for (const Mods m : kMods) {
    CAPTURE(seq_q, seq_kv, window, m.softcap, m.alibi_slope);
    Head h = make_head(seq_q, seq_kv, 64, seq_q * 7 + seq_kv);
    // NaN / Inf in the key and value of key 0 when it lies before every row's window: its
    // (modified) score is overwritten with -inf, so they never reach the output.
    if (window > 0 && static_cast<std::size_t>(seq_kv - seq_q) > window + 1) {
      h.kv[0] = std::numeric_limits<float>::quiet_NaN();
      h.kv[64] = std::numeric_limits<float>::infinity();
    }
    const auto a = args_of(h, true, window, m);
    const auto want = reference(a);
    for (const auto isa : test::supported_isas()) {
      CAPTURE(k::isa_name(isa));
      REQUIRE(test::max_error(run_flash(isa, a), want) <= 1.0);
    }
  }
}

TEST_CASE("masked softmax rows with soft-capping and ALiBi match the reference",
          "[kernels][softmax][score_mods]") {
  const auto rows = GENERATE(1, 7, 20);
  const auto cols = GENERATE(1, 7, 8, 9, 17, 100, 1030);
  const bool causal = GENERATE(false, true);
  for (const Mods m : kMods) {
    CAPTURE(rows, cols, causal, m.softcap, m.alibi_slope);
    const std::size_t ld = cols + 3;
    const auto s = test::random_floats(rows * ld, 11 * rows + cols, -20.0f, 20.0f);
    const auto offset = static_cast<std::ptrdiff_t>(cols) - rows;
    std::vector<double> want(rows * ld, 0.0);
    k::reference::masked_softmax_rows(s.data(), static_cast<std::ptrdiff_t>(ld), rows, cols, 0.3f,
                                      causal, offset, 0, want.data(),
                                      static_cast<std::ptrdiff_t>(ld), m.softcap, m.alibi_slope);
    for (const auto isa : test::supported_isas()) {
      CAPTURE(k::isa_name(isa));
      std::vector<float> got = s;
      k::masked_softmax_rows(isa, got.data(), static_cast<std::ptrdiff_t>(ld), rows, cols, 0.3f,
                             causal, offset, 0, m.softcap, m.alibi_slope);
      for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r) {
        CAPTURE(r);
        REQUIRE(test::max_error(std::span<const float>(got.data() + r * ld, cols),
                                std::span<const double>(want.data() + r * ld, cols)) <= 1.0);
      }
    }
  }
}

TEST_CASE("decode with soft-capping and ALiBi matches the reference, past position 1000",
          "[kernels][decode][score_mods]") {
  const auto n = GENERATE(1, 17, 511, 512, 513, 1000, 2055);
  const auto head_dim = GENERATE(1, 3, 64, 80, 128);
  for (const Mods m : kMods) {
    CAPTURE(n, head_dim, m.softcap, m.alibi_slope);
    const std::size_t ld = 2 * head_dim + 1;
    const auto q = test::random_floats(head_dim, 3 * n + head_dim, -2.0f, 2.0f);
    const auto kv = test::random_floats(n * ld, 5 * n + head_dim, -2.0f, 2.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const auto query_position = static_cast<std::int64_t>(n) - 1;
    k::DecodeMods mods;
    mods.softcap = m.softcap;
    mods.alibi_slope = m.alibi_slope;
    mods.key_offset = -query_position;
    std::vector<double> want(head_dim);
    k::reference::decode(q.data(), kv.data(), static_cast<std::ptrdiff_t>(ld), kv.data() + head_dim,
                         static_cast<std::ptrdiff_t>(ld), n, head_dim, scale, want.data(), mods);
    // The twins agree: decode's twin is the attention twin's last row.
    k::AttentionArgs a;
    a.q = q.data();
    a.ld_q = static_cast<std::ptrdiff_t>(head_dim);
    a.k = kv.data();
    a.v = kv.data() + head_dim;
    a.ld_k = a.ld_v = static_cast<std::ptrdiff_t>(ld);
    a.head_dim = head_dim;
    a.seq_len_q = 1;
    a.seq_len_kv = n;
    a.q_end = 1;
    a.scale = scale;
    a.causal = true;
    a.softcap = m.softcap;
    a.alibi_slope = m.alibi_slope;
    std::vector<double> twin(head_dim);
    k::reference::attention(a, twin.data(), static_cast<std::ptrdiff_t>(head_dim));
    for (std::size_t d = 0; d < static_cast<std::size_t>(head_dim); ++d)
      REQUIRE(twin[d] == Approx(want[d]).margin(1e-12));
    for (const auto isa : test::supported_isas()) {
      CAPTURE(k::isa_name(isa));
      REQUIRE(test::max_error(
                  decode(isa, q.data(), kv.data(), kv.data() + head_dim,
                         static_cast<std::ptrdiff_t>(ld), n, head_dim, scale, m, query_position),
                  want) <= 1.0);
    }
  }
}

TEST_CASE("soft-capping saturates: huge scores give the capped softmax, not NaN",
          "[kernels][score_mods]") {
  // Scores of +-1e30 (and +-inf products are impossible here: finite inputs) cap to +-softcap.
  Head h = make_head(9, 9, 4, 99);
  for (float& x : h.q) x *= 1e15f;
  for (std::size_t j = 0; j < h.seq_kv; ++j)
    for (std::size_t d = 0; d < 4; ++d) h.kv[j * h.ld + d] *= 1e15f;
  const auto a = args_of(h, true, 0, {3.0f, 0.0f});
  const auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto got = run_flash(isa, a);
    for (float x : got) REQUIRE(std::isfinite(x));
    REQUIRE(test::max_error(got, want) <= 1.0);
  }
}
