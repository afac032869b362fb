// Attention through a block table (the paged KV cache, issue 16) against the same keys and
// values held contiguously: decode (one query per head, 512-key chunks + merge) and flash
// (128 new queries against the cache), gpt2-small's 12 heads of 64, from DRAM (the steps
// rotate over 16 sessions of 2 x 12 x kv_len x 64 floats, more than a last-level cache).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "kernels/half.hpp"
#include "kernels/kernels.hpp"

namespace {

namespace k = attn::kernels;

constexpr std::size_t kHeads = 12, kHeadDim = 64, kBlock = 128, kSessions = 16;

// Sessions of kv positions: contiguous [2][heads][kv][head_dim], or blocks of kBlock positions
// [2][heads][kBlock][head_dim] in a shuffled memory order (as a pool hands them out).
struct Caches {
  std::size_t kv;
  std::vector<bench::Buffer> contiguous, paged;
  std::vector<std::vector<const void*>> tables;
  explicit Caches(std::size_t kv_len) : kv(kv_len) {
    const std::size_t blocks = (kv + kBlock - 1) / kBlock,
                      block_floats = 2 * kHeads * kBlock * kHeadDim;
    for (std::size_t s = 0; s < kSessions; ++s) {
      contiguous.emplace_back(2 * kHeads * kv * kHeadDim, static_cast<std::uint32_t>(s + 1));
      paged.emplace_back(blocks * block_floats, static_cast<std::uint32_t>(s + 1));
      std::vector<const void*> t;
      for (std::size_t b = 0; b < blocks; ++b)
        t.push_back(paged.back().get() + (b * 7 % blocks) * block_floats);
      tables.push_back(std::move(t));
    }
  }
  k::KvPages pages(std::size_t s, std::size_t h) const {
    return {tables[s].data(), static_cast<std::ptrdiff_t>(h * kBlock * kHeadDim),
            static_cast<std::ptrdiff_t>((kHeads + h) * kBlock * kHeadDim),
            static_cast<std::ptrdiff_t>(kHeadDim), kBlock};
  }
  const float* k_of(std::size_t s, std::size_t h) const {
    return contiguous[s].get() + h * kv * kHeadDim;
  }
  const float* v_of(std::size_t s, std::size_t h) const {
    return contiguous[s].get() + (kHeads + h) * kv * kHeadDim;
  }
};

void BM_DecodeCache(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto kv = static_cast<std::size_t>(state.range(0));
  const bool paged = state.range(1) != 0;
  const Caches c(kv);
  const std::size_t chunks = (kv + k::kDecodeChunk - 1) / k::kDecodeChunk;
  bench::Buffer q(kHeadDim, 9), part(chunks * kHeadDim), out(kHeadDim);
  std::vector<k::DecodePartial> parts(chunks);
  std::size_t s = 0;
  for (auto _ : state) {
    for (std::size_t h = 0; h < kHeads; ++h) {
      const k::KvPages p = c.pages(s, h);
      for (std::size_t ch = 0; ch < chunks; ++ch) {
        const std::size_t k0 = ch * k::kDecodeChunk, n = std::min(k::kDecodeChunk, kv - k0);
        if (paged) {
          k::decode_chunk_paged(isa, q.get(), p, k0, n, kHeadDim, 0.125f,
                                part.get() + ch * kHeadDim, &parts[ch]);
        } else {
          const auto ld = static_cast<std::ptrdiff_t>(kHeadDim);
          k::decode_chunk(isa, q.get(), c.k_of(s, h) + k0 * kHeadDim, ld,
                          c.v_of(s, h) + k0 * kHeadDim, ld, n, kHeadDim, 0.125f,
                          part.get() + ch * kHeadDim, &parts[ch]);
        }
      }
      k::decode_merge(isa, part.get(), parts.data(), chunks, kHeadDim, out.get());
    }
    s = (s + 1) % kSessions;
    benchmark::ClobberMemory();
  }
  const double bytes = 2.0 * static_cast<double>(kHeads * kv * kHeadDim * sizeof(float));
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(k::isa_name(isa));
}
BENCHMARK(BM_DecodeCache)
    ->ArgNames({"kv_len", "paged"})
    ->ArgsProduct({{4096}, {0, 1}})
    ->UseRealTime();

void BM_FlashCache(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto kv = static_cast<std::size_t>(state.range(0));
  const bool paged = state.range(1) != 0;
  constexpr std::size_t kNew = 128;
  const Caches c(kv);
  bench::Buffer q(kNew * kHeadDim, 9), out(kNew * kHeadDim);
  bench::Buffer scratch(k::flash_attention_scratch_floats(isa, kHeadDim));
  std::size_t s = 0;
  for (auto _ : state) {
    for (std::size_t h = 0; h < kHeads; ++h) {
      const k::KvPages p = c.pages(s, h);
      k::AttentionArgs a;
      a.q = q.get();
      a.ld_q = a.ld_k = a.ld_v = a.ld_out = static_cast<std::ptrdiff_t>(kHeadDim);
      a.k = c.k_of(s, h);
      a.v = c.v_of(s, h);
      a.out = out.get();
      a.head_dim = kHeadDim;
      a.seq_len_q = kNew;
      a.seq_len_kv = kv;
      a.scale = 0.125f;
      a.causal = true;
      a.scratch = scratch.get();
      if (paged) a.pages = &p;
      k::flash_attention_blocks(isa, a, 0, k::flash_attention_block_count(isa, kNew, kHeadDim));
    }
    s = (s + 1) % kSessions;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kNew));
}
BENCHMARK(BM_FlashCache)
    ->ArgNames({"kv_len", "paged"})
    ->ArgsProduct({{4096}, {0, 1}})
    ->UseRealTime();

// A paged cache in each element type (issue 15): gpt2-small's 12 heads, one decode step per
// iteration over 4 sessions in rotation (4 x 2 x 12 x kv_len x 64 elements: > the L3 from
// kv_len 4096 in f32, 16384 in int8), GB/s of the bytes the kernels read (int8's scales
// included). type: 0 f32, 1 bf16, 2 f16, 3 int8.
void BM_DecodeCacheType(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto kv = static_cast<std::size_t>(state.range(0));
  const auto type = static_cast<k::KvType>(state.range(1));
  constexpr std::size_t kTypedSessions = 4;
  const std::size_t elem = k::kv_type_bytes(type), blocks = (kv + kBlock - 1) / kBlock;
  const std::size_t data_bytes = 2 * kHeads * kBlock * kHeadDim * elem;
  const std::size_t block_bytes = data_bytes + 2 * kHeads * kBlock * sizeof(float);
  std::vector<std::vector<unsigned char>> memory;
  std::vector<std::vector<const void*>> tables;
  const bench::Buffer values(kBlock * kHeadDim, 17);  // one block's rows, repeated
  for (std::size_t s = 0; s < kTypedSessions; ++s) {
    memory.emplace_back(blocks * block_bytes);
    std::vector<const void*> t;
    for (std::size_t b = 0; b < blocks; ++b) {
      unsigned char* base = memory.back().data() + (b * 7 % blocks) * block_bytes;
      t.push_back(base);
      for (std::size_t r = 0; r < 2 * kHeads * kBlock; ++r) {
        for (std::size_t d = 0; d < kHeadDim; ++d) {
          const float x = values.get()[(r % kBlock) * kHeadDim + d];
          unsigned char* e = base + (r * kHeadDim + d) * elem;
          if (type == k::KvType::kF32) {
            std::memcpy(e, &x, 4);
          } else if (type == k::KvType::kInt8) {
            *reinterpret_cast<std::int8_t*>(e) = static_cast<std::int8_t>(x * 100.0f);
          } else {
            const std::uint16_t h =
                type == k::KvType::kBf16 ? k::f32_to_bf16(x).bits : k::f32_to_f16(x).bits;
            std::memcpy(e, &h, 2);
          }
        }
        reinterpret_cast<float*>(base + data_bytes)[r] = 0.01f;
      }
    }
    tables.push_back(std::move(t));
  }
  const std::size_t chunks = (kv + k::kDecodeChunk - 1) / k::kDecodeChunk;
  bench::Buffer q(kHeadDim, 9), part(chunks * kHeadDim), out(kHeadDim);
  std::vector<k::DecodePartial> parts(chunks);
  std::size_t s = 0;
  for (auto _ : state) {
    for (std::size_t h = 0; h < kHeads; ++h) {
      k::KvPages p;
      p.blocks = tables[s].data();
      p.k_offset = static_cast<std::ptrdiff_t>(h * kBlock * kHeadDim);
      p.v_offset = static_cast<std::ptrdiff_t>((kHeads + h) * kBlock * kHeadDim);
      p.ld = static_cast<std::ptrdiff_t>(kHeadDim);
      p.block_positions = kBlock;
      p.type = type;
      p.k_scale_offset = static_cast<std::ptrdiff_t>(data_bytes + h * kBlock * sizeof(float));
      p.v_scale_offset =
          static_cast<std::ptrdiff_t>(data_bytes + (kHeads + h) * kBlock * sizeof(float));
      for (std::size_t ch = 0; ch < chunks; ++ch) {
        const std::size_t k0 = ch * k::kDecodeChunk, n = std::min(k::kDecodeChunk, kv - k0);
        k::decode_chunk_paged(isa, q.get(), p, k0, n, kHeadDim, 0.125f, part.get() + ch * kHeadDim,
                              &parts[ch]);
      }
      k::decode_merge(isa, part.get(), parts.data(), chunks, kHeadDim, out.get());
    }
    s = (s + 1) % kTypedSessions;
    benchmark::ClobberMemory();
  }
  const double row = static_cast<double>(kHeadDim * elem) +
                     (type == k::KvType::kInt8 ? static_cast<double>(sizeof(float)) : 0.0);
  const double bytes = 2.0 * static_cast<double>(kHeads * kv) * row;
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(k::isa_name(isa));
}
BENCHMARK(BM_DecodeCacheType)
    ->ArgNames({"kv_len", "type"})
    ->ArgsProduct({{16384}, {0, 1, 2, 3}})
    ->UseRealTime();

}  // namespace
