// Scheduling of the attention kernels (see attention.hpp).
#include "attention.hpp"

#include <algorithm>

#include "kernels/kernels.hpp"

namespace attn::detail {

void run_fused_attention(const EngineState& st, Workspace& ws, const AttentionJob& job) {
  const std::size_t heads = static_cast<std::size_t>(st.config.num_heads);
  const std::size_t q_block = st.mask.q_block();
  const std::size_t n_qb = (job.seq_len_q + q_block - 1) / q_block;
  // Causal blocks cost more the later they are: pair block i with block n-1-i so that every
  // task does about the same work, whatever order the scheduler runs them in.
  const std::size_t pairs = (n_qb + 1) / 2;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    kernels::AttentionArgs a;
    a.ld_q = job.q.ld;
    a.ld_k = job.k.ld;
    a.ld_v = job.v.ld;
    a.ld_out = job.out.ld;
    a.head_dim = st.head_dim;
    a.seq_len_q = job.seq_len_q;
    a.seq_len_kv = job.seq_len_kv;
    a.scale = st.scale;
    a.causal = st.config.causal;
    a.window = static_cast<std::size_t>(st.config.window);
    a.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t bh = t / pairs, pair = t % pairs;
      const std::size_t b = bh / heads, h = bh % heads;
      a.q = job.q.at(b, h);
      a.k = job.k.at(b, h);
      a.v = job.v.at(b, h);
      a.out = job.out.at(b, h);
      const std::size_t blocks[2] = {pair, n_qb - 1 - pair};
      for (int i = 0; i < (blocks[0] == blocks[1] ? 1 : 2); ++i) {
        a.q_begin = blocks[i] * q_block;
        a.q_end = std::min(job.seq_len_q, a.q_begin + q_block);
        kernels::flash_attention(st.isa, a);
      }
    }
  };
  st.scheduler->parallel_for(job.batch * heads * pairs, 1, body);
}

Status run_unfused_attention(const EngineState& st, Workspace& ws, const AttentionJob& job) {
  const kernels::Isa isa = st.isa;
  const std::size_t heads = static_cast<std::size_t>(st.config.num_heads), hd = st.head_dim;
  const std::size_t tq = job.seq_len_q, tkv = job.seq_len_kv;
  const std::size_t ld_s = round_up_floats(tkv);
  const std::size_t k_packed = round_up_floats(kernels::gemm_packed_floats(isa, tkv, hd));
  const std::size_t v_packed = round_up_floats(kernels::gemm_packed_floats(isa, hd, tkv));
  const std::size_t scores = mul_or_max(tq, ld_s);
  const std::size_t per_worker = scores > SIZE_MAX / 4 ? SIZE_MAX : scores + k_packed + v_packed;
  const std::size_t floats = mul_or_max(per_worker, static_cast<std::size_t>(st.workers));
  if (Status s = grow(st, ws, ws.extra, floats, "the unfused path's scores"); !s.ok()) return s;
  auto body = [&](std::size_t begin, std::size_t end, int worker) {
    float* s = ws.extra.data() + per_worker * worker;
    float* kp = s + tq * ld_s;
    float* vp = kp + k_packed;
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t b = t / heads, h = t % heads;
      // S = Q Kᵀ: K [tkv, hd] is the "weight" operand, packed like nn.Linear's [n, k].
      kernels::gemm_pack_b(isa, job.k.at(b, h), job.k.ld, 1, tkv, hd, kp);
      // O = P V: V [tkv, hd] read as [n = hd, k = tkv].
      kernels::gemm_pack_b(isa, job.v.at(b, h), 1, job.v.ld, hd, tkv, vp);
      kernels::GemmArgs g;
      g.scratch = ws.worker_scratch(worker, st.worker_scratch_floats);
      g.a = job.q.at(b, h);
      g.lda = job.q.ld;
      g.packed_b = kp;
      g.n_total = g.n = tkv;
      g.m = tq;
      g.k = hd;
      g.c = s;
      g.ldc = static_cast<std::ptrdiff_t>(ld_s);
      kernels::gemm(isa, g);
      kernels::masked_softmax_rows(isa, s, static_cast<std::ptrdiff_t>(ld_s), tq, tkv, st.scale,
                                   st.config.causal, static_cast<std::ptrdiff_t>(tkv) - static_cast<std::ptrdiff_t>(tq),
                                   static_cast<std::size_t>(st.config.window));
      g.a = s;
      g.lda = static_cast<std::ptrdiff_t>(ld_s);
      g.packed_b = vp;
      g.n_total = g.n = hd;
      g.k = tkv;
      g.c = job.out.at(b, h);
      g.ldc = job.out.ld;
      kernels::gemm(isa, g);
    }
  };
  st.scheduler->parallel_for(job.batch * heads, 1, body);
  return {};
}

Status run_decode(const EngineState& st, Workspace& ws, const DecodeJob& job) {
  constexpr std::size_t kChunk = kernels::kDecodeChunk;
  const std::size_t heads = static_cast<std::size_t>(st.config.num_heads), hd = st.head_dim;
  std::size_t max_chunks = 1;
  for (std::size_t s = 0; s < job.count; ++s) {
    const DecodeSequence& seq = job.sequences[s];
    max_chunks = std::max(max_chunks, (seq.kv_end - 1) / kChunk - seq.kv_begin / kChunk + 1);
  }
  const std::size_t slots = job.count * heads * max_chunks;
  // Partial outputs [slots, head_dim], then the partial (max, sum) pairs.
  const std::size_t floats = round_up_floats(slots * hd) + slots * 2;
  if (Status s = grow(st, ws, ws.extra, floats, "decode partials"); !s.ok()) return s;
  float* outs = ws.extra.data();
  auto* partials = reinterpret_cast<kernels::DecodePartial*>(outs + round_up_floats(slots * hd));
  static_assert(sizeof(kernels::DecodePartial) == 2 * sizeof(float));

  const auto head_stride = static_cast<std::ptrdiff_t>(job.capacity * hd);
  auto chunk_body = [&](std::size_t begin, std::size_t end, int) {
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t c = t % max_chunks, sh = t / max_chunks;
      const std::size_t s = sh / heads, h = sh % heads;
      const DecodeSequence& seq = job.sequences[s];
      const std::size_t first = seq.kv_begin / kChunk + c;
      if (first > (seq.kv_end - 1) / kChunk) continue;  // this sequence has fewer chunks
      const std::size_t k0 = std::max(seq.kv_begin, first * kChunk);
      const std::size_t k1 = std::min(seq.kv_end, (first + 1) * kChunk);
      const std::ptrdiff_t off = static_cast<std::ptrdiff_t>(h) * head_stride + static_cast<std::ptrdiff_t>(k0 * hd);
      kernels::decode_chunk(st.isa, job.q.at(s, h), seq.k_cache + off, static_cast<std::ptrdiff_t>(hd),
                            seq.v_cache + off, static_cast<std::ptrdiff_t>(hd), k1 - k0, hd, st.scale,
                            outs + t * hd, partials + t);
    }
  };
  st.scheduler->parallel_for(slots, 1, chunk_body);
  auto merge_body = [&](std::size_t begin, std::size_t end, int) {
    for (std::size_t sh = begin; sh < end; ++sh) {
      const std::size_t s = sh / heads, h = sh % heads;
      const DecodeSequence& seq = job.sequences[s];
      const std::size_t n = (seq.kv_end - 1) / kChunk - seq.kv_begin / kChunk + 1;
      kernels::decode_merge(st.isa, outs + sh * max_chunks * hd, partials + sh * max_chunks, n, hd,
                            job.out.at(s, h));
    }
  };
  // The merge is tiny: one grain of many (sequence, head) pairs per task.
  st.scheduler->parallel_for(job.count * heads, 16, merge_body);
  return {};
}

}  // namespace attn::detail
