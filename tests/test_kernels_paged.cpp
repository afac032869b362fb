// Kernels reading keys and values through a block table (a paged cache): bit-identical to the
// same rows held contiguously, and within tolerance of the float64 twins, on every ISA, with
// tail sizes and chunks that start mid-block or cross block boundaries.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

// n positions of one kv head, contiguous ([n, head_dim] keys and values) and paged (blocks
// of `bp` positions in shuffled memory order, each [2][bp][head_dim] with the head's keys at
// offset 0 and values at bp * head_dim).
struct PagedKv {
  std::size_t n, head_dim, bp;
  std::vector<float> k, v;                 // contiguous
  std::vector<std::vector<float>> memory;  // the blocks
  std::vector<const void*> table;
  k::KvPages pages;

  PagedKv(std::size_t n_, std::size_t head_dim_, std::size_t bp_, std::uint64_t seed)
      : n(n_), head_dim(head_dim_), bp(bp_) {
    k = test::random_floats(n * head_dim, seed);
    v = test::random_floats(n * head_dim, seed + 1);
    const std::size_t blocks = (n + bp - 1) / bp;
    memory.assign(blocks, std::vector<float>(2 * bp * head_dim, std::nanf("")));
    // Table entry i points at memory block (i * 7 + 3) % blocks: not in address order.
    for (std::size_t i = 0; i < blocks; ++i) table.push_back(memory[(i * 7 + 3) % blocks].data());
    for (std::size_t p = 0; p < n; ++p) {
      float* base = static_cast<float*>(const_cast<void*>(table[p / bp]));
      for (std::size_t d = 0; d < head_dim; ++d) {
        base[(p % bp) * head_dim + d] = k[p * head_dim + d];
        base[(bp + p % bp) * head_dim + d] = v[p * head_dim + d];
      }
    }
    pages.blocks = table.data();
    pages.k_offset = 0;
    pages.v_offset = static_cast<std::ptrdiff_t>(bp * head_dim);
    pages.ld = static_cast<std::ptrdiff_t>(head_dim);
    pages.block_positions = bp;
  }
};

}  // namespace

TEST_CASE("paged decode chunks equal contiguous ones bit for bit and match the reference",
          "[kernels][decode][paged]") {
  const auto n = GENERATE(1, 17, 128, 129, 511, 700, 1100);
  const auto head_dim = GENERATE(3, 64, 80);
  const auto first = GENERATE(0, 1, 100, 127, 300);  // chunks starting mid-block
  if (static_cast<std::size_t>(first) >= static_cast<std::size_t>(n)) return;
  CAPTURE(n, head_dim, first);
  const PagedKv kv(n, head_dim, 128, 7 * n + head_dim);
  const auto q = test::random_floats(head_dim, 3 * n + head_dim);
  const std::size_t len = std::min<std::size_t>(k::kDecodeChunk, n - first);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  k::DecodeMods mods;
  mods.alibi_slope = first % 2 == 0 ? 0.0f : -0.25f;
  mods.key_offset = -static_cast<std::int64_t>(len);
  std::vector<double> want(head_dim);
  k::reference::decode_paged(q.data(), kv.pages, first, len, head_dim, scale, want.data(), mods);
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> contiguous(head_dim), paged(head_dim);
    k::DecodePartial pc, pp;
    const auto ld = static_cast<std::ptrdiff_t>(head_dim);
    k::decode_chunk(isa, q.data(), kv.k.data() + first * head_dim, ld,
                    kv.v.data() + first * head_dim, ld, len, head_dim, scale, contiguous.data(),
                    &pc, mods);
    k::decode_chunk_paged(isa, q.data(), kv.pages, first, len, head_dim, scale, paged.data(), &pp,
                          mods);
    // Bit for bit unless a sub-block crosses a block boundary (first not block-aligned) AND
    // head_dim has a scalar tail: then the compiler's code for the tail (per-row table
    // lookups vs a strided loop it may vectorise without FMA contraction) rounds differently.
    const bool exact = head_dim % 16 == 0 || first % 128 == 0;
    if (exact) {
      REQUIRE(paged == contiguous);
      REQUIRE(pp.max == pc.max);
      REQUIRE(pp.sum == pc.sum);
    }
    std::vector<float> merged(head_dim);
    k::decode_merge(isa, paged.data(), &pp, 1, head_dim, merged.data());
    REQUIRE(test::max_error(merged, want) <= 1.0);

    // The grouped form: 3 query rows sharing this kv head.
    const auto q3 = test::random_floats(3 * head_dim, 11 * n + head_dim);
    std::vector<float> gc(3 * head_dim), gp(3 * head_dim);
    k::DecodePartial gpc[3], gpp[3];
    const k::DecodeMods m3[3] = {mods, mods, mods};
    k::decode_chunk_group(isa, q3.data(), ld, 3, kv.k.data() + first * head_dim, ld,
                          kv.v.data() + first * head_dim, ld, len, head_dim, scale, gc.data(), ld,
                          gpc, 1, m3);
    k::decode_chunk_group_paged(isa, q3.data(), ld, 3, kv.pages, first, len, head_dim, scale,
                                gp.data(), ld, gpp, 1, m3);
    if (exact) {
      REQUIRE(gp == gc);
      for (int g = 0; g < 3; ++g) REQUIRE(gpp[g].max == gpc[g].max);
    }
    for (int g = 0; g < 3; ++g) {
      std::vector<float> row(head_dim);
      k::decode_merge(isa, gp.data() + g * head_dim, &gpp[g], 1, head_dim, row.data());
      std::vector<double> want_g(head_dim);
      k::reference::decode_paged(q3.data() + g * head_dim, kv.pages, first, len, head_dim, scale,
                                 want_g.data(), mods);
      REQUIRE(test::max_error(row, want_g) <= 1.0);
    }
  }
}

TEST_CASE("paged flash attention equals contiguous bit for bit and matches the reference",
          "[kernels][attention][paged]") {
  const auto n_kv = GENERATE(1, 100, 128, 129, 300, 513);
  const auto n_q = GENERATE(1, 7, 130);
  const auto head_dim = GENERATE(5, 64);
  const auto window = GENERATE(0, 50);
  if (n_q > n_kv) return;
  CAPTURE(n_kv, n_q, head_dim, window);
  const PagedKv kv(n_kv, head_dim, 256, 5 * n_kv + head_dim);
  const auto q = test::random_floats(n_q * head_dim, 13 * n_kv + n_q);
  k::AttentionArgs a;
  a.q = q.data();
  a.ld_q = a.ld_k = a.ld_v = a.ld_out = static_cast<std::ptrdiff_t>(head_dim);
  a.k = kv.k.data();
  a.v = kv.v.data();
  a.head_dim = head_dim;
  a.seq_len_q = n_q;
  a.seq_len_kv = n_kv;
  a.q_begin = 0;
  a.q_end = n_q;
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  a.causal = true;
  a.window = window;
  a.softcap = window > 0 ? 5.0f : 0.0f;
  std::vector<double> want(n_q * head_dim);
  k::AttentionArgs ref = a;
  ref.pages = &kv.pages;
  k::reference::attention(ref, want.data(), static_cast<std::ptrdiff_t>(head_dim));
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, head_dim) + 16);
    std::vector<float> contiguous(n_q * head_dim), paged(n_q * head_dim);
    k::AttentionArgs c = a;
    const auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    c.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);  // 64-byte aligned
    c.out = contiguous.data();
    const std::size_t blocks = k::flash_attention_block_count(isa, n_q, head_dim);
    k::flash_attention_blocks(isa, c, 0, blocks);
    c.pages = &kv.pages;
    c.k = c.v = nullptr;
    c.out = paged.data();
    k::flash_attention_blocks(isa, c, 0, blocks);
    REQUIRE(paged == contiguous);
    REQUIRE(test::max_error(paged, want) <= 1.0);
  }
}
