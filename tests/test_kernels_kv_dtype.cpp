// Kernels reading a 16-bit or int8 paged cache (KvPages::type): against the float64 twins
// reading the same stored values, and bit for bit against the f32 kernels given those values
// widened (what "widened in registers" must mean), on every ISA, with tail sizes, chunks that
// start mid-block, and sub-blocks that cross block boundaries.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_helpers.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"
#include "kernels/reference.hpp"

namespace {

namespace k = attn::kernels;

const char* type_name(k::KvType t) {
  switch (t) {
    case k::KvType::kF32:
      return "f32";
    case k::KvType::kBf16:
      return "bf16";
    case k::KvType::kF16:
      return "f16";
    case k::KvType::kInt8:
      return "int8";
  }
  return "?";
}

// n positions of one kv head stored as `type` in blocks of bp positions (shuffled memory
// order): [2][bp][head_dim] elements (keys, then values), then for int8 [2][bp] f32 scales.
// `k` and `v` hold the stored values widened to f32 ([n, head_dim] each), and `f32_pages`
// the same widened values as an f32 paged cache.
struct TypedKv {
  std::size_t n, head_dim, bp;
  k::KvType type;
  std::vector<float> k, v;
  std::vector<std::vector<unsigned char>> memory, f32_memory;
  std::vector<const void*> table, f32_table;
  k::KvPages pages, f32_pages;

  TypedKv(std::size_t n_, std::size_t head_dim_, std::size_t bp_, k::KvType type_,
          std::uint32_t seed)
      : n(n_), head_dim(head_dim_), bp(bp_), type(type_) {
    const std::size_t elem = k::kv_type_bytes(type);
    const std::size_t data_bytes = 2 * bp * head_dim * elem;
    const std::size_t blocks = (n + bp - 1) / bp;
    memory.assign(blocks, std::vector<unsigned char>(data_bytes + 2 * bp * sizeof(float), 0xFF));
    f32_memory.assign(blocks, std::vector<unsigned char>(2 * bp * head_dim * sizeof(float), 0xFF));
    for (std::size_t i = 0; i < blocks; ++i) {
      table.push_back(memory[(i * 7 + 3) % blocks].data());
      f32_table.push_back(f32_memory[(i * 7 + 3) % blocks].data());
    }
    // Keys scaled up so that their quantisation matters, values as they come.
    std::vector<float> raw_k = test::random_floats(n * head_dim, seed);
    const std::vector<float> raw_v = test::random_floats(n * head_dim, seed + 1);
    for (float& x : raw_k) x *= 3.0f;
    k.resize(n * head_dim);
    v.resize(n * head_dim);
    for (std::size_t p = 0; p < n; ++p) {
      auto* block = static_cast<unsigned char*>(const_cast<void*>(table[p / bp]));
      auto* f32_block = static_cast<float*>(const_cast<void*>(f32_table[p / bp]));
      for (int kv = 0; kv < 2; ++kv) {
        const float* src = (kv == 0 ? raw_k.data() : raw_v.data()) + p * head_dim;
        float* widened = (kv == 0 ? k.data() : v.data()) + p * head_dim;
        const std::size_t row = kv * bp + p % bp;
        store(src, block + row * head_dim * elem,
              reinterpret_cast<float*>(block + data_bytes) + row, widened);
        std::memcpy(f32_block + row * head_dim, widened, head_dim * sizeof(float));
      }
    }
    pages.blocks = table.data();
    pages.k_offset = 0;
    pages.v_offset = static_cast<std::ptrdiff_t>(bp * head_dim);
    pages.ld = static_cast<std::ptrdiff_t>(head_dim);
    pages.block_positions = bp;
    pages.type = type;
    pages.k_scale_offset = static_cast<std::ptrdiff_t>(data_bytes);
    pages.v_scale_offset = static_cast<std::ptrdiff_t>(data_bytes + bp * sizeof(float));
    f32_pages = pages;
    f32_pages.blocks = f32_table.data();
    f32_pages.type = k::KvType::kF32;
    f32_pages.k_scale_offset = f32_pages.v_scale_offset = 0;
  }

  // One row in the cache's type (round to nearest even; int8 symmetric, max|x| / 127), and
  // the value each element then stands for (int8: the f32 product scale * q, as the flash
  // kernel widens it).
  void store(const float* src, unsigned char* dst, float* scale, float* widened) const {
    if (type == k::KvType::kInt8) {
      float amax = 0;
      for (std::size_t d = 0; d < head_dim; ++d) amax = std::max(amax, std::fabs(src[d]));
      *scale = amax / 127.0f;
      for (std::size_t d = 0; d < head_dim; ++d) {
        const auto q = static_cast<std::int8_t>(std::nearbyint(src[d] * (127.0f / amax)));
        reinterpret_cast<std::int8_t*>(dst)[d] = q;
        widened[d] = *scale * static_cast<float>(q);
      }
      return;
    }
    for (std::size_t d = 0; d < head_dim; ++d) {
      if (type == k::KvType::kF32) {
        reinterpret_cast<float*>(dst)[d] = widened[d] = src[d];
        continue;
      }
      const bool bf = type == k::KvType::kBf16;
      const std::uint16_t h = bf ? k::f32_to_bf16(src[d]).bits : k::f32_to_f16(src[d]).bits;
      reinterpret_cast<std::uint16_t*>(dst)[d] = h;
      widened[d] = bf ? k::bf16_to_f32(h) : k::f16_to_f32(h);
    }
  }
};

}  // namespace

TEST_CASE(
    "decode over a 16-bit or int8 paged cache matches the float64 twin; 16-bit equals "
    "the f32 kernel on the widened values bit for bit",
    "[kernels][decode][paged][kv_dtype]") {
  const auto type = GENERATE(k::KvType::kBf16, k::KvType::kF16, k::KvType::kInt8);
  const auto n = GENERATE(1, 17, 129, 511, 700);
  const auto head_dim = GENERATE(3, 64, 80);
  const auto first = GENERATE(0, 100, 127);  // chunks starting mid-block
  if (static_cast<std::size_t>(first) >= static_cast<std::size_t>(n)) return;
  CAPTURE(type_name(type), n, head_dim, first);
  const TypedKv kv(n, head_dim, 128, type, 7 * n + head_dim);
  const auto q = test::random_floats(head_dim, 3 * n + head_dim);
  const std::size_t len = std::min<std::size_t>(k::kDecodeChunk, n - first);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  k::DecodeMods mods;
  mods.alibi_slope = first % 2 == 0 ? 0.0f : -0.25f;
  mods.key_offset = -static_cast<std::int64_t>(len);
  std::vector<double> want(head_dim);
  k::reference::decode_paged(q.data(), kv.pages, first, len, head_dim, scale, want.data(), mods);
  const auto ld = static_cast<std::ptrdiff_t>(head_dim);
  const auto q3 = test::random_floats(3 * head_dim, 11 * n + head_dim);
  const k::DecodeMods m3[3] = {mods, mods, mods};
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> typed(head_dim), widened(head_dim);
    k::DecodePartial pt, pw;
    k::decode_chunk_paged(isa, q.data(), kv.pages, first, len, head_dim, scale, typed.data(), &pt,
                          mods);
    k::decode_chunk_paged(isa, q.data(), kv.f32_pages, first, len, head_dim, scale, widened.data(),
                          &pw, mods);
    // Bit for bit unless head_dim has a scalar tail (the compiler may contract the f32 tail's
    // multiply-add into an FMA and not the widened one; tests/test_kernels_paged.cpp has the
    // same exception); int8 applies its scales after the dot products, so never.
    const bool exact = type != k::KvType::kInt8 && head_dim % 16 == 0;
    if (exact) {
      REQUIRE(typed == widened);
      REQUIRE(pt.max == pw.max);
      REQUIRE(pt.sum == pw.sum);
    }
    std::vector<float> merged(head_dim);
    k::decode_merge(isa, typed.data(), &pt, 1, head_dim, merged.data());
    REQUIRE(test::max_error(merged, want) <= 1.0);

    // The grouped form: 3 query rows sharing this kv head.
    std::vector<float> gt(3 * head_dim), gw(3 * head_dim);
    k::DecodePartial gpt[3], gpw[3];
    k::decode_chunk_group_paged(isa, q3.data(), ld, 3, kv.pages, first, len, head_dim, scale,
                                gt.data(), ld, gpt, 1, m3);
    k::decode_chunk_group_paged(isa, q3.data(), ld, 3, kv.f32_pages, first, len, head_dim, scale,
                                gw.data(), ld, gpw, 1, m3);
    if (exact) REQUIRE(gt == gw);
    for (int g = 0; g < 3; ++g) {
      std::vector<float> row(head_dim);
      k::decode_merge(isa, gt.data() + g * head_dim, &gpt[g], 1, head_dim, row.data());
      std::vector<double> want_g(head_dim);
      k::reference::decode_paged(q3.data() + g * head_dim, kv.pages, first, len, head_dim, scale,
                                 want_g.data(), mods);
      REQUIRE(test::max_error(row, want_g) <= 1.0);
    }
  }
}

TEST_CASE(
    "flash attention over a 16-bit or int8 paged cache equals the f32 kernel on the "
    "widened values bit for bit and matches the float64 twin",
    "[kernels][attention][paged][kv_dtype]") {
  const auto type = GENERATE(k::KvType::kBf16, k::KvType::kF16, k::KvType::kInt8);
  const auto n_kv = GENERATE(1, 129, 300);
  const auto n_q = GENERATE(1, 7, 130);
  const auto head_dim = GENERATE(5, 64);
  const auto window = GENERATE(0, 50);
  if (n_q > n_kv) return;
  CAPTURE(type_name(type), n_kv, n_q, head_dim, window);
  const TypedKv kv(n_kv, head_dim, 128, type, 5 * n_kv + head_dim);
  const auto q = test::random_floats(n_q * head_dim, 13 * n_kv + n_q);
  k::AttentionArgs a;
  a.q = q.data();
  a.ld_q = a.ld_out = static_cast<std::ptrdiff_t>(head_dim);
  a.head_dim = head_dim;
  a.seq_len_q = n_q;
  a.seq_len_kv = n_kv;
  a.q_begin = 0;
  a.q_end = n_q;
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  a.causal = true;
  a.window = window;
  a.softcap = window > 0 ? 5.0f : 0.0f;
  a.pages = &kv.pages;
  std::vector<double> want(n_q * head_dim);
  k::reference::attention(a, want.data(), static_cast<std::ptrdiff_t>(head_dim));
  for (const auto isa : test::supported_isas()) {
    CAPTURE(k::isa_name(isa));
    std::vector<float> scratch(k::flash_attention_scratch_floats(isa, head_dim) + 16);
    std::vector<float> typed(n_q * head_dim), widened(n_q * head_dim);
    k::AttentionArgs c = a;
    const auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
    c.scratch = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);  // 64-byte aligned
    const std::size_t blocks = k::flash_attention_block_count(isa, n_q, head_dim);
    c.out = typed.data();
    k::flash_attention_blocks(isa, c, 0, blocks);
    c.pages = &kv.f32_pages;
    c.out = widened.data();
    k::flash_attention_blocks(isa, c, 0, blocks);
    REQUIRE(typed == widened);
    REQUIRE(test::max_error(typed, want) <= 1.0);
  }
}

TEST_CASE("cache element widening: every bf16, f16 and int8 pattern, NaN and Inf included",
          "[kernels][decode][paged][kv_dtype]") {
  // One position per pattern value is too many rows; instead a head_dim-wide row per 64
  // patterns, read through decode with one key (the output is that key's value row).
  for (const auto type : {k::KvType::kBf16, k::KvType::kF16, k::KvType::kInt8}) {
    CAPTURE(type_name(type));
    const std::size_t head_dim = 67;  // a tail on every ISA
    const std::size_t patterns = type == k::KvType::kInt8 ? 256 : 65536;
    const std::size_t elem = k::kv_type_bytes(type);
    const std::size_t bp = 128;
    std::vector<unsigned char> block(2 * bp * head_dim * elem + 2 * bp * sizeof(float), 0);
    const void* table[1] = {block.data()};
    k::KvPages pages;
    pages.blocks = table;
    pages.k_offset = 0;
    pages.v_offset = static_cast<std::ptrdiff_t>(bp * head_dim);
    pages.ld = static_cast<std::ptrdiff_t>(head_dim);
    pages.block_positions = bp;
    pages.type = type;
    pages.k_scale_offset = static_cast<std::ptrdiff_t>(2 * bp * head_dim * elem);
    pages.v_scale_offset = pages.k_scale_offset + static_cast<std::ptrdiff_t>(bp * sizeof(float));
    auto* scales = reinterpret_cast<float*>(block.data() + pages.k_scale_offset);
    scales[bp] = 0.5f;  // the value row's scale
    const std::vector<float> q(head_dim, 0.0f);
    for (std::size_t first = 0; first < patterns; first += head_dim) {
      for (std::size_t d = 0; d < head_dim; ++d) {
        const auto bits = static_cast<std::uint32_t>((first + d) % patterns);
        unsigned char* v = block.data() + (bp * head_dim + d) * elem;
        if (elem == 2) {
          const auto h = static_cast<std::uint16_t>(bits);
          std::memcpy(v, &h, 2);
        } else {
          *v = static_cast<unsigned char>(bits);
        }
      }
      std::vector<double> want(head_dim);
      k::reference::decode_paged(q.data(), pages, 0, 1, head_dim, 1.0f, want.data(), {});
      for (std::size_t d = 0; d < head_dim; ++d) {
        const auto bits = static_cast<std::uint16_t>((first + d) % patterns);
        const double exact = type == k::KvType::kBf16  ? k::bf16_to_f32(bits)
                             : type == k::KvType::kF16 ? k::f16_to_f32(bits)
                                                       : 0.5 * static_cast<std::int8_t>(bits);
        if (std::isnan(exact)) {
          REQUIRE(std::isnan(want[d]));
        } else {
          REQUIRE(want[d] == exact);
        }
      }
      for (const auto isa : test::supported_isas()) {
        CAPTURE(k::isa_name(isa), first);
        std::vector<float> out(head_dim), merged(head_dim);
        k::DecodePartial part;
        k::decode_chunk_paged(isa, q.data(), pages, 0, 1, head_dim, 1.0f, out.data(), &part, {});
        k::decode_merge(isa, out.data(), &part, 1, head_dim, merged.data());
        for (std::size_t d = 0; d < head_dim; ++d) {
          if (std::isnan(want[d])) {
            REQUIRE(std::isnan(merged[d]));
          } else {
            REQUIRE(static_cast<double>(merged[d]) == want[d]);
          }
        }
      }
    }
  }
}
