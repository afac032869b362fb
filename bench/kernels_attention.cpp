// Benchmarks of the attention kernels against the machine's roofline, measured in the run:
// fused attention (GFLOP/s over visible pairs, fraction of the FMA peak), decode (GB/s of K+V
// read, fraction of the single-core DRAM read bandwidth) and the unfused row softmax.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "bench_common.hpp"
#include "kernels/kernels.hpp"
#include "kernels/visibility.hpp"

namespace {

namespace k = attn::kernels;

using bench::Buffer;

// One (batch, head): Q, K, V [seq, head_dim] each; all q-blocks in order on one thread.
void BM_FlashAttention(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto seq = static_cast<std::size_t>(state.range(0));
  const auto head_dim = static_cast<std::size_t>(state.range(1));
  const bool causal = state.range(2) != 0;
  Buffer q(seq * head_dim, 1), kk(seq * head_dim, 2), v(seq * head_dim, 3), out(seq * head_dim, 4);
  Buffer scratch(k::flash_attention_scratch_floats(isa, head_dim));
  k::AttentionArgs a;
  a.q = q.get();
  a.ld_q = static_cast<std::ptrdiff_t>(head_dim);
  a.k = kk.get();
  a.ld_k = a.ld_q;
  a.v = v.get();
  a.ld_v = a.ld_q;
  a.out = out.get();
  a.ld_out = a.ld_q;
  a.head_dim = head_dim;
  a.seq_len_q = seq;
  a.seq_len_kv = seq;
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  a.causal = causal;
  a.scratch = scratch.get();
  const std::size_t n_blocks = k::flash_attention_block_count(isa, seq, head_dim);
  const double peak = bench::peak_gflops();
  for (auto _ : state) {
    k::flash_attention_blocks(isa, a, 0, n_blocks);
    benchmark::ClobberMemory();
  }
  const double flops = 4.0 * static_cast<double>(head_dim) * k::visible_pairs(seq, seq, causal, 0);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * seq));
  bench::report_rate(state, "GFLOP/s", flops * 1e-9, "peak_frac", peak);
}
BENCHMARK(BM_FlashAttention)
    ->ArgNames({"seq_len", "head_dim", "causal"})
    ->ArgsProduct({{128, 256, 512, 1024, 2048, 4096}, {64, 128}, {1}})
    ->Args({2048, 64, 0})
    ->Args({2048, 128, 0})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One decode step of `heads` heads over `keys` cached keys, head_dim 64: K and V are
// [heads, keys, head_dim] (separate buffers). Enough copies rotate that every iteration reads
// cold data (>= 256 MiB in all, 8x this machine's L3), so every point measures DRAM.
void BM_Decode(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto keys = static_cast<std::size_t>(state.range(0));
  const auto heads = static_cast<std::size_t>(state.range(1));
  constexpr std::size_t head_dim = 64;
  const std::size_t set_floats = heads * keys * head_dim;
  const std::size_t copies = std::max<std::size_t>(1, (128u << 20) / (set_floats * sizeof(float)));
  Buffer kk(copies * set_floats, 5), v(copies * set_floats, 6), q(heads * head_dim, 7),
      out(heads * head_dim);
  const std::size_t chunks = (keys + k::kDecodeChunk - 1) / k::kDecodeChunk;
  Buffer partial_out(chunks * head_dim);
  std::vector<k::DecodePartial> partials(chunks);
  const float scale = 0.125f;
  std::size_t copy = 0;
  const double bw = bench::read_gbps();
  for (auto _ : state) {
    const float* kc = kk.get() + copy * set_floats;
    const float* vc = v.get() + copy * set_floats;
    copy = (copy + 1) % copies;
    for (std::size_t h = 0; h < heads; ++h) {
      for (std::size_t c = 0; c < chunks; ++c) {
        const std::size_t j0 = c * k::kDecodeChunk;
        k::decode_chunk(isa, q.get() + h * head_dim, kc + (h * keys + j0) * head_dim, head_dim,
                        vc + (h * keys + j0) * head_dim, head_dim,
                        std::min(k::kDecodeChunk, keys - j0), head_dim, scale,
                        partial_out.get() + c * head_dim, &partials[c]);
      }
      k::decode_merge(isa, partial_out.get(), partials.data(), chunks, head_dim,
                      out.get() + h * head_dim);
    }
    benchmark::ClobberMemory();
  }
  const double bytes = 2.0 * static_cast<double>(set_floats * sizeof(float));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));  // tokens decoded
  bench::report_rate(state, "GB/s", bytes * 1e-9, "bw_frac", bw);
}
BENCHMARK(BM_Decode)
    ->ArgNames({"kv_len", "num_heads"})
    ->ArgsProduct({{1024, 2048, 4096, 8192, 16384}, {12}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The unfused path's softmax over rows of 1024 scores (causal, bottom-right), in L2.
void BM_Softmax(benchmark::State& state) {
  const k::Isa isa = bench::kernel_isa();
  const auto rows = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t cols = 1024;
  Buffer s(rows * cols, 8), work(rows * cols);
  for (auto _ : state) {
    std::copy(s.get(), s.get() + rows * cols, work.get());
    k::masked_softmax_rows(isa, work.get(), cols, rows, cols, 0.125f, true,
                           static_cast<std::ptrdiff_t>(cols - rows), 0);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows * cols));
  state.SetLabel(k::isa_name(isa));
}
BENCHMARK(BM_Softmax)->ArgNames({"rows"})->Arg(64)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
