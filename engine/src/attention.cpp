// The attention stage (see attention.hpp): kernels scheduled over (sequence, head, ...) tasks.
#include "attention.hpp"

#include <algorithm>

#include "engine_state.hpp"
#include "kernels/kernels.hpp"
#include "kernels/visibility.hpp"
#include "session_state.hpp"

namespace attn::detail {
namespace {

// Where one (sequence, head) reads and writes.
struct HeadIo {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  std::ptrdiff_t ld_q = 0;
  std::ptrdiff_t ld_kv = 0;
  float* out = nullptr;
};

// Query head h reads kv head h / (num_heads / kv_heads).
HeadIo head_io(const EngineState& st, const SequenceCall& s, const AttentionIo& io, std::size_t h) {
  const auto ld = static_cast<std::ptrdiff_t>(st.activation_cols);
  const std::size_t kv_head = h / (st.num_heads / st.kv_heads);
  const float* row = io.activations + static_cast<std::ptrdiff_t>(s.first_row) * ld;
  const auto col = static_cast<std::ptrdiff_t>(h * st.head_dim);
  const auto kv_col = static_cast<std::ptrdiff_t>(kv_head * st.head_dim);
  HeadIo r;
  r.q = row + col;
  r.ld_q = ld;
  r.out = io.out + static_cast<std::ptrdiff_t>(s.first_row) * io.ld_out + col;
  if (s.cache != nullptr) {
    const auto head = static_cast<std::ptrdiff_t>(
        kv_head * static_cast<std::size_t>(st.config.context_length) * st.head_dim);
    r.k = s.cache->k_cache.data() + head;
    r.v = s.cache->v_cache.data() + head;
    r.ld_kv = static_cast<std::ptrdiff_t>(st.head_dim);
  } else {
    // Without projections (3.3) k_col = v_col = 0: q = k = v = x.
    r.k = row + static_cast<std::ptrdiff_t>(st.k_col) + kv_col;
    r.v = row + static_cast<std::ptrdiff_t>(st.v_col) + kv_col;
    r.ld_kv = ld;
  }
  return r;
}

// The sequence that task t belongs to (tasks numbered from sequences[i].first_task on).
const SequenceCall& sequence_of(std::span<SequenceCall> sequences, std::size_t t) {
  auto it =
      std::upper_bound(sequences.begin(), sequences.end(), t,
                       [](std::size_t task, const SequenceCall& s) { return task < s.first_task; });
  return *(it - 1);
}

}  // namespace

void run_flash_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                         const AttentionIo& io) {
  const std::size_t num_heads = static_cast<std::size_t>(st.config.num_heads);
  // Causal blocks cost more the later they are: pair block i with block n-1-i so that every
  // task does about the same work, whatever order the scheduler runs them in.
  auto pairs_of = [&](const SequenceCall& s) {
    return (kernels::flash_attention_block_count(st.isa, s.new_tokens, st.head_dim) + 1) / 2;
  };
  std::size_t tasks = 0;
  for (SequenceCall& s : sequences) {
    s.first_task = tasks;
    tasks += num_heads * pairs_of(s);
  }
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    kernels::AttentionArgs a;
    a.head_dim = st.head_dim;
    a.scale = st.scale;
    a.causal = st.causal;
    a.window = static_cast<std::size_t>(st.config.window);
    a.softcap = st.softcap;
    a.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
    a.ld_out = io.ld_out;
    for (std::size_t t = begin; t < end; ++t) {
      const SequenceCall& s = sequence_of(sequences, t);
      const std::size_t pairs = pairs_of(s), local = t - s.first_task;
      const HeadIo h = head_io(st, s, io, local / pairs);
      a.alibi_slope = st.alibi_slope(local / pairs);
      a.q = h.q;
      a.ld_q = h.ld_q;
      a.k = h.k;
      a.v = h.v;
      a.ld_k = a.ld_v = h.ld_kv;
      a.out = h.out;
      a.seq_len_q = s.new_tokens;
      a.seq_len_kv = s.kv_len;
      const std::size_t n_blocks =
          kernels::flash_attention_block_count(st.isa, s.new_tokens, st.head_dim);
      const std::size_t first = local % pairs, last = n_blocks - 1 - first;
      kernels::flash_attention_blocks(st.isa, a, first, first + 1);
      if (last != first) kernels::flash_attention_blocks(st.isa, a, last, last + 1);
    }
  };
  st.scheduler->parallel_for(tasks, 1, body);
}

Status run_unfused_attention(const EngineState& st, Workspace& ws,
                             std::span<SequenceCall> sequences, const AttentionIo& io) {
  const kernels::Isa isa = st.isa;
  const std::size_t num_heads = static_cast<std::size_t>(st.config.num_heads);
  const std::size_t head_dim = st.head_dim;
  std::size_t max_q = 0, max_kv = 0, tasks = 0;
  for (SequenceCall& s : sequences) {
    max_q = std::max(max_q, s.new_tokens);
    max_kv = std::max(max_kv, s.kv_len);
    s.first_task = tasks;
    tasks += num_heads;
  }
  const std::size_t ld_s = round_up_floats(max_kv);
  const std::size_t k_packed = round_up_floats(kernels::gemm_packed_floats(isa, max_kv, head_dim));
  const std::size_t v_packed = round_up_floats(kernels::gemm_packed_floats(isa, head_dim, max_kv));
  const std::size_t scores = mul_or_max(max_q, ld_s);
  const std::size_t per_worker = scores > SIZE_MAX / 4 ? SIZE_MAX : scores + k_packed + v_packed;
  const std::size_t floats = mul_or_max(per_worker, static_cast<std::size_t>(st.workers));
  if (Status e = grow(ws, ws.extra, floats, "the unfused path's scores", st.workspace_limit());
      !e.ok()) {
    return e;
  }
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    float* scores_buf = ws.extra.data() + per_worker * static_cast<std::size_t>(worker);
    float* k_pack = scores_buf + max_q * ld_s;
    float* v_pack = k_pack + k_packed;
    for (std::size_t t = begin; t < end; ++t) {
      const SequenceCall& s = sequence_of(sequences, t);
      const std::size_t head = t - s.first_task;
      const HeadIo h = head_io(st, s, io, head);
      const std::size_t seq_len_q = s.new_tokens, kv_len = s.kv_len;
      // S = Q Kᵀ: K [kv_len, head_dim] is the "weight" operand, packed like nn.Linear's [n, k].
      kernels::gemm_pack_b(isa, h.k, h.ld_kv, 1, kv_len, head_dim, k_pack);
      // O = P V: V [kv_len, head_dim] read as [n = head_dim, k = kv_len].
      kernels::gemm_pack_b(isa, h.v, 1, h.ld_kv, head_dim, kv_len, v_pack);
      kernels::GemmArgs g;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      g.a = h.q;
      g.lda = h.ld_q;
      g.packed_b = k_pack;
      g.n_total = g.n = kv_len;
      g.m = seq_len_q;
      g.k = head_dim;
      g.c = scores_buf;
      g.ldc = static_cast<std::ptrdiff_t>(ld_s);
      kernels::gemm(isa, g);
      kernels::masked_softmax_rows(
          isa, scores_buf, static_cast<std::ptrdiff_t>(ld_s), seq_len_q, kv_len, st.scale,
          st.causal, static_cast<std::ptrdiff_t>(kv_len) - static_cast<std::ptrdiff_t>(seq_len_q),
          static_cast<std::size_t>(st.config.window), st.softcap, st.alibi_slope(head));
      g.a = scores_buf;
      g.lda = static_cast<std::ptrdiff_t>(ld_s);
      g.packed_b = v_pack;
      g.n_total = g.n = head_dim;
      g.k = kv_len;
      g.c = h.out;
      g.ldc = io.ld_out;
      kernels::gemm(isa, g);
    }
  };
  st.scheduler->parallel_for(tasks, 1, body);
  return {};
}

Status run_decode(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                  const AttentionIo& io, double* cache_bytes) {
  constexpr std::size_t kChunk = kernels::kDecodeChunk;
  const std::size_t num_heads = static_cast<std::size_t>(st.config.num_heads);
  const std::size_t head_dim = st.head_dim;
  const auto window = static_cast<std::size_t>(st.config.window);
  // The keys a sequence's one new query sees, and the chunks they span.
  auto keys_of = [&](const SequenceCall& s) {
    return kernels::visible_keys(0, 1, s.kv_len, /*causal=*/true, window);
  };
  auto chunks_of = [&](kernels::KeyRange keys) {
    return (keys.end - 1) / kChunk - keys.begin / kChunk + 1;
  };
  std::size_t max_chunks = 1;
  double bytes = 0;
  for (const SequenceCall& s : sequences) {
    const kernels::KeyRange keys = keys_of(s);
    max_chunks = std::max(max_chunks, chunks_of(keys));
    // Each kv head's keys and values once (a group's query heads share them in cache).
    bytes += 2.0 * static_cast<double>(keys.size() * head_dim * sizeof(float)) *
             static_cast<double>(st.kv_heads);
  }
  const std::size_t slots = sequences.size() * num_heads * max_chunks;
  // Partial outputs [slots, head_dim], then the partial (max, sum) pairs.
  const std::size_t floats = round_up_floats(slots * head_dim) + slots * 2;
  if (Status e = grow(ws, ws.extra, floats, "decode partials", st.workspace_limit()); !e.ok())
    return e;
  float* partial_outs = ws.extra.data();
  auto* partials =
      reinterpret_cast<kernels::DecodePartial*>(partial_outs + round_up_floats(slots * head_dim));
  static_assert(sizeof(kernels::DecodePartial) == 2 * sizeof(float));

  // Grouped-query heads: one task per (sequence, kv head, chunk) runs the group's query heads
  // together (decode_chunk_group), so each key and value row is read from memory once per
  // group instead of once per query head. Each head's partials land in the same slots as the
  // per-head tasks' (equal to rounding: the kernel reduces dot products in another order); a
  // head's bits depend only on the fixed chunks, not on the thread count or its group.
  const std::size_t group = num_heads / st.kv_heads;
  if (group > 1) {
    const std::size_t kv_heads = st.kv_heads;
    auto group_body = [&](std::size_t begin, std::size_t end, int) {
      kernels::DecodeMods mods[kernels::kDecodeGroupMax];
      for (std::size_t t = begin; t < end; ++t) {
        const std::size_t chunk = t % max_chunks, sk = t / max_chunks;
        const std::size_t seq = sk / kv_heads, kv_head = sk % kv_heads;
        const SequenceCall& s = sequences[seq];
        const kernels::KeyRange keys = keys_of(s);
        const std::size_t first = keys.begin / kChunk + chunk;
        if (first > (keys.end - 1) / kChunk) continue;  // this sequence has fewer chunks
        const std::size_t k0 = std::max(keys.begin, first * kChunk);
        const std::size_t k1 = std::min(keys.end, (first + 1) * kChunk);
        for (std::size_t g0 = 0; g0 < group; g0 += kernels::kDecodeGroupMax) {
          const std::size_t h0 = kv_head * group + g0;
          const std::size_t rows = std::min(kernels::kDecodeGroupMax, group - g0);
          const HeadIo h = head_io(st, s, io, h0);  // heads h0.. are adjacent columns of Q
          const auto row0 = static_cast<std::ptrdiff_t>(k0) * h.ld_kv;
          for (std::size_t g = 0; g < rows; ++g) {
            mods[g].softcap = st.softcap;
            mods[g].alibi_slope = st.alibi_slope(h0 + g);
            mods[g].key_offset =
                static_cast<std::int64_t>(k0) - static_cast<std::int64_t>(s.kv_len - 1);
          }
          const std::size_t slot = (seq * num_heads + h0) * max_chunks + chunk;
          kernels::decode_chunk_group(
              st.isa, h.q, static_cast<std::ptrdiff_t>(head_dim), rows, h.k + row0, h.ld_kv,
              h.v + row0, h.ld_kv, k1 - k0, head_dim, st.scale, partial_outs + slot * head_dim,
              static_cast<std::ptrdiff_t>(max_chunks * head_dim), partials + slot,
              static_cast<std::ptrdiff_t>(max_chunks), mods);
        }
      }
    };
    st.scheduler->parallel_for(sequences.size() * kv_heads * max_chunks, 1, group_body);
  }
  auto chunk_body = [&](std::size_t begin, std::size_t end, int) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t chunk = t % max_chunks, sh = t / max_chunks;
      const SequenceCall& s = sequences[sh / num_heads];
      const kernels::KeyRange keys = keys_of(s);
      const std::size_t first = keys.begin / kChunk + chunk;
      if (first > (keys.end - 1) / kChunk) continue;  // this sequence has fewer chunks
      const std::size_t k0 = std::max(keys.begin, first * kChunk);
      const std::size_t k1 = std::min(keys.end, (first + 1) * kChunk);
      const HeadIo h = head_io(st, s, io, sh % num_heads);
      const auto row0 = static_cast<std::ptrdiff_t>(k0) * h.ld_kv;
      kernels::DecodeMods mods;  // the new token is at position kv_len - 1
      mods.softcap = st.softcap;
      mods.alibi_slope = st.alibi_slope(sh % num_heads);
      mods.key_offset = static_cast<std::int64_t>(k0) - static_cast<std::int64_t>(s.kv_len - 1);
      kernels::decode_chunk(st.isa, h.q, h.k + row0, h.ld_kv, h.v + row0, h.ld_kv, k1 - k0,
                            head_dim, st.scale, partial_outs + t * head_dim, partials + t, mods);
    }
  };
  if (group == 1) st.scheduler->parallel_for(slots, 1, chunk_body);
  auto merge_body = [&](std::size_t begin, std::size_t end, int) {
    for (std::size_t sh = begin; sh < end; ++sh) {
      const SequenceCall& s = sequences[sh / num_heads];
      const HeadIo h = head_io(st, s, io, sh % num_heads);
      kernels::decode_merge(st.isa, partial_outs + sh * max_chunks * head_dim,
                            partials + sh * max_chunks, chunks_of(keys_of(s)), head_dim, h.out);
    }
  };
  // The merge is tiny: one grain of many (sequence, head) pairs per task.
  st.scheduler->parallel_for(sequences.size() * num_heads, 16, merge_body);
  if (cache_bytes != nullptr) *cache_bytes = bytes;
  return {};
}

}  // namespace attn::detail
