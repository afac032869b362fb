// The fused attention kernel against its float64 twin on every supported ISA: awkward sizes,
// causal/bottom-right/window masks, NaN and Inf where they must not (or must) matter,
// bit-identical results for any q-row split, and out aliasing q.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

// Q, K, V of one head stored like the engine's activations: [seq, 3 * hd + pad] with Q, K, V
// at column offsets 0, hd, 2 hd (pad makes the row stride odd, so nothing is aligned).
struct Qkv {
  std::size_t seq_q, seq_kv, hd, ld;
  std::vector<float> q, kv;  // q: [seq_q, ld]; kv: [seq_kv, ld] with K at 0 and V at hd
  float* k() { return kv.data(); }
  float* v() { return kv.data() + hd; }
};

Qkv make_qkv(std::size_t seq_q, std::size_t seq_kv, std::size_t hd, std::uint64_t seed,
             float amplitude = 1.0f) {
  Qkv x{seq_q, seq_kv, hd, 2 * hd + 3, {}, {}};
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
  a.head_dim = x.hd;
  a.seq_len_q = x.seq_q;
  a.seq_len_kv = x.seq_kv;
  a.q_begin = 0;
  a.q_end = x.seq_q;
  a.scale = 1.0f / std::sqrt(static_cast<float>(x.hd));
  a.causal = causal;
  a.window = window;
  return a;
}

// Runs the kernel over all rows in calls of `split` rows (0: the kernel's q_block, as the
// engine does); returns [seq_q, hd].
std::vector<float> run(k::Isa isa, k::AttentionArgs a, std::size_t split = 0) {
  std::vector<float> out(a.seq_len_q * a.head_dim, -7.0f);
  std::vector<float> scratch(k::flash_attention_scratch_floats(isa, a.head_dim) + 16);
  const std::size_t step = split ? split : k::flash_attention_q_block(isa, a.head_dim);
  a.out = out.data();
  a.ld_out = static_cast<std::ptrdiff_t>(a.head_dim);
  // 64-byte aligned scratch, as the contract promises.
  auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  a.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
  for (std::size_t r = 0; r < a.seq_len_q; r += step) {
    a.q_begin = r;
    a.q_end = std::min(a.seq_len_q, r + step);
    k::flash_attention(isa, a);
  }
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

bool row_has_nan(const std::vector<float>& out, std::size_t hd, std::size_t i) {
  for (std::size_t d = 0; d < hd; ++d)
    if (std::isnan(out[i * hd + d])) return true;
  return false;
}

// Square self-attention of `seq` rows: every instruction set against the float64 reference.
void check_all_isas(int seq, int hd, bool causal, int seed) {
  CAPTURE(seq, hd, causal);
  auto x = make_qkv(seq, seq, hd, seed);
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
  const auto hd = GENERATE(1, 3, 64, 80);
  const bool causal = GENERATE(false, true);
  check_all_isas(seq, hd, causal, 1000 * seq + hd);
}

TEST_CASE("flash attention matches the reference over head dims", "[kernels][attention]") {
  const auto hd = GENERATE(1, 2, 3, 8, 63, 64, 80, 128, 256);
  const auto seq = GENERATE(65, 129);
  const bool causal = GENERATE(false, true);
  check_all_isas(seq, hd, causal, 77 * seq + hd);
}

TEST_CASE("flash attention on a long sequence", "[kernels][attention]") {
  const auto hd = GENERATE(1, 64);
  const bool causal = GENERATE(false, true);
  CAPTURE(hd, causal);
  auto x = make_qkv(1000, 1000, hd, 5 + hd);
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
  const auto hd = GENERATE(as<std::size_t>{}, 8, 64);
  CAPTURE(lens.first, lens.second, window, hd);
  auto x = make_qkv(lens.first, lens.second, hd, lens.first * 7 + lens.second + window);
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
        for (std::size_t d = 0; d < hd; ++d) REQUIRE(got[i * hd + d] == 0.0f);
    }
  }
}

TEST_CASE("flash attention with large logits", "[kernels][attention]") {
  // Inputs x3 make scores 9x larger (up to ~25 at head_dim 64): the softmax is then close to
  // one-hot and errors of the float scores (relative ~1e-7 of |s|) are amplified by |s|.
  const auto hd = GENERATE(8, 64, 128);
  const bool causal = GENERATE(false, true);
  CAPTURE(hd, causal);
  auto x = make_qkv(200, 200, hd, 99 + hd, 3.0f);
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
  const auto hd = GENERATE(as<std::size_t>{}, 3, 64);
  CAPTURE(bad, in_value, window, hd);
  const std::size_t seq = 150, poisoned = 70;  // a key in the middle of a kv-block
  auto x = make_qkv(seq, seq, hd, 4242 + hd);
  auto clean = x;
  for (std::size_t d = 0; d < hd; ++d) (in_value ? x.v() : x.k())[poisoned * x.ld + d] = bad;
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
        REQUIRE(std::memcmp(&got[i * hd], &got_clean[i * hd], hd * sizeof(float)) == 0);
      } else if (std::isnan(bad)) {
        REQUIRE(row_has_nan(got, hd, i));
      }
    }
  }
}

TEST_CASE("flash attention: NaN in future keys and values of a causal call is ignored",
          "[kernels][attention]") {
  // 100 queries over a 260-key cache: row i sees keys <= i + 160, so rows [0, 40) see keys
  // <= 199. Keys 200.. are NaN in both K and V and only rows [0, 40) are computed.
  const std::size_t hd = 64;
  auto x = make_qkv(100, 260, hd, 31);
  for (std::size_t j = 200; j < 260; ++j)
    for (std::size_t d = 0; d < 2 * hd; ++d) x.kv[j * x.ld + d] = std::nanf("");
  auto a = args_of(x, true, 0);
  auto want = reference(a);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> out(40 * hd);
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, hd) + 16);
    auto b = a;
    b.q_begin = 0;
    b.q_end = 40;
    b.out = out.data();
    b.ld_out = hd;
    auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    b.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
    k::flash_attention(isa, b);
    REQUIRE(test::max_error(std::span<const float>(out),
                            std::span<const double>(want.data(), 40 * hd)) <= 1.0);
  }
}

TEST_CASE("flash attention: any q-row split gives the same bits", "[kernels][attention]") {
  const auto hd = GENERATE(3, 64, 80);
  const auto mode = GENERATE(0, 1, 2);  // full, causal, causal + window
  CAPTURE(hd, mode);
  auto x = make_qkv(300, 333, hd, 555 + hd);
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
  const auto hd = GENERATE(8, 64, 80);
  CAPTURE(hd);
  auto x = make_qkv(200, 200, hd, 9 + hd);
  const auto a = args_of(x, true, 0);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    const auto want = run(isa, a);
    auto y = x;  // out written over Q in place, row stride ld
    auto b = args_of(y, true, 0);
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, hd) + 16);
    auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    b.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
    b.out = y.q.data();
    b.ld_out = b.ld_q;
    const std::size_t qb = k::flash_attention_q_block(isa, hd);
    for (std::size_t r = 0; r < 200; r += qb) {
      b.q_begin = r;
      b.q_end = std::min<std::size_t>(200, r + qb);
      k::flash_attention(isa, b);
    }
    for (std::size_t i = 0; i < 200; ++i)
      REQUIRE(std::memcmp(&y.q[i * y.ld], &want[i * hd], hd * sizeof(float)) == 0);
  }
}
