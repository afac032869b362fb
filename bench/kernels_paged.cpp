// Attention through a block table (the paged KV cache, issue 16) against the same keys and
// values held contiguously: decode (one query per head, 512-key chunks + merge) and flash
// (128 new queries against the cache), gpt2-small's 12 heads of 64, from DRAM (the steps
// rotate over 16 sessions of 2 x 12 x kv_len x 64 floats, more than a last-level cache).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bench_common.hpp"
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

}  // namespace
