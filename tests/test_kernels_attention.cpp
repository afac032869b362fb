// The fused attention kernel against its float64 twin on every supported ISA: awkward sizes,
// causal/bottom-right/window masks, NaN and Inf where they must not (or must) matter,
// bit-identical results for any q-row split, and out aliasing q.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"
#include "kernels/visibility.hpp"

namespace {

namespace k = attn::kernels;

// Q, K, V of one head stored like the engine's activations: [seq, 3 * head_dim + pad] with Q, K, V
// at column offsets 0, head_dim, 2 head_dim (pad makes the row stride odd, so nothing is aligned).
struct Qkv {
  std::size_t seq_q, seq_kv, head_dim, ld;
  std::vector<float> q, kv;  // q: [seq_q, ld]; kv: [seq_kv, ld] with K at 0 and V at head_dim
  float* k() { return kv.data(); }
  float* v() { return kv.data() + head_dim; }
};

Qkv make_qkv(std::size_t seq_q, std::size_t seq_kv, std::size_t head_dim, std::uint64_t seed,
             float amplitude = 1.0f) {
  Qkv x{seq_q, seq_kv, head_dim, 2 * head_dim + 3, {}, {}};
  x.q = test::random_floats(seq_q * x.ld, seed, -amplitude, amplitude);
  x.kv = test::random_floats(seq_kv * x.ld, seed + 1, -amplitude, amplitude);
  return x;
}

k::AttentionArgs args_of(Qkv& x, bool causal, std::size_t window) {
  k::AttentionArgs a;
  a.q = x.q.data();
  a.ld_q = static_cast<std::ptrdiff_t>(x.ld);
  a.k = x.k();
  a.ld_k = static_cast<std::ptrdiff_t>(x.ld);
  a.v = x.v();
  a.ld_v = static_cast<std::ptrdiff_t>(x.ld);
  a.head_dim = x.head_dim;
  a.seq_len_q = x.seq_q;
  a.seq_len_kv = x.seq_kv;
  a.q_begin = 0;
  a.q_end = x.seq_q;
  a.scale = 1.0f / std::sqrt(static_cast<float>(x.head_dim));
  a.causal = causal;
  a.window = window;
  return a;
}

// Runs the kernel over all rows in calls of `split` rows (0: the kernel's q_block, as the
// engine does); returns [seq_q, head_dim].
std::vector<float> run(k::Isa isa, k::AttentionArgs a, std::size_t split = 0) {
  std::vector<float> out(a.seq_len_q * a.head_dim, -7.0f);
  std::vector<float> scratch(k::flash_attention_scratch_floats(isa, a.head_dim) + 16);
  a.out = out.data();
  a.ld_out = static_cast<std::ptrdiff_t>(a.head_dim);
  // 64-byte aligned scratch, as the contract promises.
  auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  a.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
  k::flash_attention_blocks(
      isa, a, 0, k::flash_attention_block_count(isa, a.seq_len_q, a.head_dim, split), split);
  return out;
}

std::vector<double> reference(const k::AttentionArgs& a) {
  std::vector<double> want(a.seq_len_q * a.head_dim);
  k::AttentionArgs all = a;
  all.q_begin = 0;
  all.q_end = a.seq_len_q;
  k::reference::attention(all, want.data(), static_cast<std::ptrdiff_t>(a.head_dim));
  return want;
}

bool row_has_nan(const std::vector<float>& out, std::size_t head_dim, std::size_t i) {
  for (std::size_t d = 0; d < head_dim; ++d)
    if (std::isnan(out[i * head_dim + d])) return true;
  return false;
}

// Square self-attention of `seq` rows: every instruction set against the float64 reference.
void check_all_isas(int seq, int head_dim, bool causal, int seed) {
  CAPTURE(seq, head_dim, causal);
  auto x = make_qkv(seq, seq, head_dim, seed);
  const auto a = args_of(x, causal, 0);
  const auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    REQUIRE(test::max_error(run(isa, a), want) <= 1.0);
  }
}

}  // namespace

TEST_CASE("flash attention matches the reference over sequence lengths", "[kernels][attention]") {
  const auto seq = GENERATE(1, 2, 5, 63, 64, 65, 127, 129);
  const auto head_dim = GENERATE(1, 3, 64, 80);
  const bool causal = GENERATE(false, true);
  check_all_isas(seq, head_dim, causal, 1000 * seq + head_dim);
}

TEST_CASE("flash attention matches the reference over head dims", "[kernels][attention]") {
  const auto head_dim = GENERATE(1, 2, 3, 8, 63, 64, 80, 128, 256);
  const auto seq = GENERATE(65, 129);
  const bool causal = GENERATE(false, true);
  check_all_isas(seq, head_dim, causal, 77 * seq + head_dim);
}

TEST_CASE("flash attention on a long sequence", "[kernels][attention]") {
  const auto head_dim = GENERATE(1, 64);
  const bool causal = GENERATE(false, true);
  CAPTURE(head_dim, causal);
  auto x = make_qkv(1000, 1000, head_dim, 5 + head_dim);
  const auto a = args_of(x, causal, 0);
  const auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    REQUIRE(test::max_error(run(isa, a), want) <= 1.0);
  }
}

TEST_CASE("flash attention: bottom-right alignment, windows and fully masked rows",
          "[kernels][attention]") {
  // (seq_q, seq_kv): fewer queries than keys (KV cache), and more (leading rows see nothing).
  const auto lens = GENERATE(
      std::pair<std::size_t, std::size_t>{1, 300}, std::pair<std::size_t, std::size_t>{37, 300},
      std::pair<std::size_t, std::size_t>{130, 129}, std::pair<std::size_t, std::size_t>{300, 200});
  const auto window = GENERATE(as<std::size_t>{}, 0, 1, 5, 64, 130);
  const auto head_dim = GENERATE(as<std::size_t>{}, 8, 64);
  CAPTURE(lens.first, lens.second, window, head_dim);
  auto x = make_qkv(lens.first, lens.second, head_dim, lens.first * 7 + lens.second + window);
  const auto a = args_of(x, true, window);
  const auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto got = run(isa, a);
    REQUIRE(test::max_error(got, want) <= 1.0);
    // Rows with no visible key are exactly 0.
    for (std::size_t i = 0; i < a.seq_len_q; ++i) {
      bool any = false;
      for (std::size_t j = 0; j < a.seq_len_kv; ++j)
        any = any || k::reference::visible(i, j, a.seq_len_q, a.seq_len_kv, true, window);
      if (!any)
        for (std::size_t d = 0; d < head_dim; ++d) REQUIRE(got[i * head_dim + d] == 0.0f);
    }
  }
}

TEST_CASE("flash attention with large logits", "[kernels][attention]") {
  // Inputs x3 make scores 9x larger (up to ~25 at head_dim 64): the softmax is then close to
  // one-hot and errors of the float scores (relative ~1e-7 of |s|) are amplified by |s|.
  const auto head_dim = GENERATE(8, 64, 128);
  const bool causal = GENERATE(false, true);
  CAPTURE(head_dim, causal);
  auto x = make_qkv(200, 200, head_dim, 99 + head_dim, 3.0f);
  const auto a = args_of(x, causal, 0);
  const auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    REQUIRE(test::max_error(run(isa, a), want) <= 1.0);
  }
}

TEST_CASE(
    "flash attention: NaN/Inf in masked keys and values change nothing, a visible NaN "
    "reaches exactly the rows that see it",
    "[kernels][attention]") {
  const float bad =
      GENERATE(std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity());
  const bool in_value = GENERATE(false, true);
  const auto window = GENERATE(as<std::size_t>{}, 0, 20);
  const auto head_dim = GENERATE(as<std::size_t>{}, 3, 64);
  CAPTURE(bad, in_value, window, head_dim);
  const std::size_t seq = 150, poisoned = 70;  // a key in the middle of a kv-block
  auto x = make_qkv(seq, seq, head_dim, 4242 + head_dim);
  auto clean = x;
  for (std::size_t d = 0; d < head_dim; ++d) (in_value ? x.v() : x.k())[poisoned * x.ld + d] = bad;
  const auto a = args_of(x, true, window);
  const auto a_clean = args_of(clean, true, window);
  const auto want = reference(a);  // float64, same masking: NaN/inf where it must be
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto got = run(isa, a);
    const auto got_clean = run(isa, a_clean);
    REQUIRE(test::max_error(got, want) <= 1.0);
    for (std::size_t i = 0; i < seq; ++i) {
      CAPTURE(i);
      if (!k::reference::visible(i, poisoned, seq, seq, true, window)) {
        // Bit-identical to the run without the poisoned key.
        REQUIRE(std::memcmp(&got[i * head_dim], &got_clean[i * head_dim],
                            head_dim * sizeof(float)) == 0);
      } else if (std::isnan(bad)) {
        REQUIRE(row_has_nan(got, head_dim, i));
      }
    }
  }
}

TEST_CASE("flash attention: NaN in future keys and values of a causal call is ignored",
          "[kernels][attention]") {
  // 100 queries over a 260-key cache: row i sees keys <= i + 160, so rows [0, 40) see keys
  // <= 199. Keys 200.. are NaN in both K and V and only rows [0, 40) are computed.
  const std::size_t head_dim = 64;
  auto x = make_qkv(100, 260, head_dim, 31);
  for (std::size_t j = 200; j < 260; ++j)
    for (std::size_t d = 0; d < 2 * head_dim; ++d) x.kv[j * x.ld + d] = std::nanf("");
  auto a = args_of(x, true, 0);
  auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> out(40 * head_dim);
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, head_dim) + 16);
    auto b = a;
    b.q_begin = 0;
    b.q_end = 40;
    b.out = out.data();
    b.ld_out = head_dim;
    auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    b.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
    k::flash_attention(isa, b);
    REQUIRE(test::max_error(std::span<const float>(out),
                            std::span<const double>(want.data(), 40 * head_dim)) <= 1.0);
  }
}

TEST_CASE("flash attention: any q-row split gives the same bits", "[kernels][attention]") {
  const auto head_dim = GENERATE(3, 64, 80);
  const auto mode = GENERATE(0, 1, 2);  // full, causal, causal + window
  CAPTURE(head_dim, mode);
  auto x = make_qkv(300, 333, head_dim, 555 + head_dim);
  const auto a = args_of(x, mode > 0, mode == 2 ? 45 : 0);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto base = run(isa, a);
    for (std::size_t split : {1, 5, 7, 33, 100, 300}) {
      CAPTURE(split);
      const auto got = run(isa, a, split);
      REQUIRE(std::memcmp(got.data(), base.data(), got.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("flash attention: out may alias q", "[kernels][attention]") {
  const auto head_dim = GENERATE(8, 64, 80);
  CAPTURE(head_dim);
  auto x = make_qkv(200, 200, head_dim, 9 + head_dim);
  const auto a = args_of(x, true, 0);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto want = run(isa, a);
    auto y = x;  // out written over Q in place, row stride ld
    auto b = args_of(y, true, 0);
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, head_dim) + 16);
    auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    b.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
    b.out = y.q.data();
    b.ld_out = b.ld_q;
    k::flash_attention_blocks(isa, b, 0, k::flash_attention_block_count(isa, 200, head_dim));
    for (std::size_t i = 0; i < 200; ++i)
      REQUIRE(std::memcmp(&y.q[i * y.ld], &want[i * head_dim], head_dim * sizeof(float)) == 0);
  }
}

TEST_CASE("the visibility rule: key ranges and pair counts", "[kernels][attention]") {
  // Square causal: row i sees keys 0..i, n(n+1)/2 pairs; not causal: every pair.
  for (std::size_t n : {1, 2, 7, 64, 1000}) {
    CAPTURE(n);
    CHECK(k::visible_pairs(n, n, true, 0) == static_cast<double>(n * (n + 1) / 2));
    CHECK(k::visible_pairs(n, n + 3, false, 0) == static_cast<double>(n * (n + 3)));
    CHECK(k::visible_keys(n - 1, n, n, true, 0).size() == n);
  }
  // Fewer queries than keys: bottom-right alignment, the first query sees kv_len - seq_len_q + 1.
  CHECK(k::visible_keys(0, 3, 10, true, 0).begin == 0);
  CHECK(k::visible_keys(0, 3, 10, true, 0).end == 8);
  // A window keeps the last `window` keys of each row: sum over rows of min(i + 1, w).
  double want = 0;
  for (std::size_t i = 0; i < 100; ++i)
    want += static_cast<double>(std::min<std::size_t>(i + 1, 16));
  CHECK(k::visible_pairs(100, 100, true, 16) == want);
  CHECK(k::visible_keys(50, 100, 100, true, 16).begin == 35);
  CHECK(k::visible_keys(50, 100, 100, true, 16).end == 51);
  // More queries than keys: the first rows see nothing.
  CHECK(k::visible_keys(0, 10, 4, true, 0).size() == 0);
  CHECK(k::visible_pairs(10, 4, true, 0) == 10.0);
}
