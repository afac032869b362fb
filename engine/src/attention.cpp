// The attention stage (see attention.hpp): kernels scheduled over (sequence, head, ...) tasks.
#include "attention.hpp"

#include <algorithm>

#include "cache_pool.hpp"

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
  kernels::KvPages pages;  // with a cache: its block table (k, v and ld_kv unused)
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
    // Block layout [2][kv_heads][B][head_dim] (cache_pool.hpp).
    const std::size_t b = s.cache->pool->block_positions;
    r.pages.blocks = s.cache->block_ptrs.data();
    r.pages.k_offset = static_cast<std::ptrdiff_t>(kv_head * b * st.head_dim);
    r.pages.v_offset = static_cast<std::ptrdiff_t>((st.kv_heads + kv_head) * b * st.head_dim);
    r.pages.ld = static_cast<std::ptrdiff_t>(st.head_dim);
    r.pages.block_positions = b;
    r.pages.type = st.kv_type;
    const auto scales = static_cast<std::ptrdiff_t>(s.cache->pool->scale_offset);
    r.pages.k_scale_offset = scales + static_cast<std::ptrdiff_t>(kv_head * b * sizeof(float));
    r.pages.v_scale_offset =
        scales + static_cast<std::ptrdiff_t>((st.kv_heads + kv_head) * b * sizeof(float));
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

// Attention per sequence: the flash kernel over (head, pair of q-blocks), or, for a sequence
// marked decode, its one query against the cache over (head or kv head, chunk). Both kinds of
// task are numbered in one list (sequence by sequence) so one parallel pass keeps every
// thread busy on a ragged call; the decode merge follows.
class AttentionPlan {
 public:
  AttentionPlan(const EngineState& st, std::span<SequenceCall> sequences)
      : st_(st), sequences_(sequences) {}

  // Numbers the tasks and decode partials; grows ws.extra for the partials.
  Status prepare(Workspace& ws) {
    std::size_t tasks = 0, slots = 0;
    for (SequenceCall& s : sequences_) {
      s.first_task = tasks;
      s.first_slot = slots;
      if (s.decode) {
        const std::size_t chunks = chunks_of(keys_of(s));
        tasks += (group() > 1 ? st_.kv_heads : st_.num_heads) * chunks;
        slots += st_.num_heads * chunks;
        // Keys and values in the cache's type, int8 with one f32 scale per row.
        const std::size_t row_bytes = st_.head_dim * kernels::kv_type_bytes(st_.kv_type) +
                                      (st_.kv_type == kernels::KvType::kInt8 ? sizeof(float) : 0);
        bytes_ += 2.0 * static_cast<double>(keys_of(s).size() * row_bytes) *
                  static_cast<double>(st_.kv_heads);
      } else {
        tasks += st_.num_heads * pairs_of(s);
      }
    }
    tasks_ = tasks;
    if (slots == 0) return {};
    // Partial outputs [slots, head_dim], then the partial (max, sum) pairs.
    const std::size_t floats = round_up_floats(slots * st_.head_dim) + slots * 2;
    if (Status e = grow(ws, ws.extra, floats, "decode partials", st_.workspace_limit()); !e.ok())
      return e;
    partial_outs_ = ws.extra.data();
    partials_ = reinterpret_cast<kernels::DecodePartial*>(partial_outs_ +
                                                          round_up_floats(slots * st_.head_dim));
    static_assert(sizeof(kernels::DecodePartial) == 2 * sizeof(float));
    any_decode_ = true;
    return {};
  }

  void run(Workspace& ws, const AttentionIo& io) const {
    auto body = [&](std::size_t begin, std::size_t end, int worker) {
      for (std::size_t t = begin; t < end; ++t) {
        const SequenceCall& s = sequence_of(sequences_, t);
        if (s.decode) {
          decode_task(s, t - s.first_task, io);
        } else {
          flash_task(s, t - s.first_task, io, ws.worker_scratch(worker, st_.worker_scratch_floats));
        }
      }
    };
    st_.scheduler->parallel_for(tasks_, 1, body);
    if (!any_decode_) return;
    const std::size_t num_heads = st_.num_heads, head_dim = st_.head_dim;
    auto merge_body = [&](std::size_t begin, std::size_t end, int) {
      for (std::size_t sh = begin; sh < end; ++sh) {
        const SequenceCall& s = sequences_[sh / num_heads];
        if (!s.decode) continue;
        const std::size_t h = sh % num_heads, chunks = chunks_of(keys_of(s));
        const std::size_t slot = s.first_slot + h * chunks;
        kernels::decode_merge(st_.isa, partial_outs_ + slot * head_dim, partials_ + slot, chunks,
                              head_dim, head_io(st_, s, io, h).out);
      }
    };
    // The merge is tiny: one grain of many (sequence, head) pairs per task.
    st_.scheduler->parallel_for(sequences_.size() * num_heads, 16, merge_body);
  }

  double cache_bytes() const noexcept { return bytes_; }

 private:
  static constexpr std::size_t kChunk = kernels::kDecodeChunk;

  std::size_t group() const noexcept { return st_.num_heads / st_.kv_heads; }
  // Causal blocks cost more the later they are: pair block i with block n-1-i so that every
  // task does about the same work, whatever order the scheduler runs them in.
  std::size_t pairs_of(const SequenceCall& s) const noexcept {
    return (kernels::flash_attention_block_count(st_.isa, s.new_tokens, st_.head_dim) + 1) / 2;
  }
  // The keys a decode sequence's one new query sees, and the fixed chunks they span.
  kernels::KeyRange keys_of(const SequenceCall& s) const noexcept {
    return kernels::visible_keys(0, 1, s.kv_len, /*causal=*/true,
                                 static_cast<std::size_t>(st_.config.window));
  }
  static std::size_t chunks_of(kernels::KeyRange keys) noexcept {
    return (keys.end - 1) / kChunk - keys.begin / kChunk + 1;
  }

  void flash_task(const SequenceCall& s, std::size_t local, const AttentionIo& io,
                  float* scratch) const {
    const std::size_t pairs = pairs_of(s);
    const HeadIo h = head_io(st_, s, io, local / pairs);
    kernels::AttentionArgs a;
    a.head_dim = st_.head_dim;
    a.scale = st_.scale;
    a.causal = st_.causal;
    a.window = static_cast<std::size_t>(st_.config.window);
    a.softcap = st_.softcap;
    a.scratch = scratch;
    a.ld_out = io.ld_out;
    a.alibi_slope = st_.alibi_slope(local / pairs);
    a.q = h.q;
    a.ld_q = h.ld_q;
    a.k = h.k;
    a.v = h.v;
    a.ld_k = a.ld_v = h.ld_kv;
    if (s.cache != nullptr) a.pages = &h.pages;
    a.out = h.out;
    a.seq_len_q = s.new_tokens;
    a.seq_len_kv = s.kv_len;
    const std::size_t n_blocks =
        kernels::flash_attention_block_count(st_.isa, s.new_tokens, st_.head_dim);
    const std::size_t first = local % pairs, last = n_blocks - 1 - first;
    kernels::flash_attention_blocks(st_.isa, a, first, first + 1);
    if (last != first) kernels::flash_attention_blocks(st_.isa, a, last, last + 1);
  }

  // Task `local` of a decode sequence: (head, chunk), or with grouped-query heads (kv head,
  // chunk) running the group's query heads together (decode_chunk_group), so each key and
  // value row is read from memory once per group. Each head's partials land in slot
  // first_slot + head * chunks + chunk either way; a head's bits depend only on the fixed
  // chunks, not on the thread count or the other sequences of the call.
  void decode_task(const SequenceCall& s, std::size_t local, const AttentionIo& io) const {
    const std::size_t head_dim = st_.head_dim;
    const kernels::KeyRange keys = keys_of(s);
    const std::size_t chunks = chunks_of(keys);
    const std::size_t chunk = local % chunks, first = keys.begin / kChunk + chunk;
    const std::size_t k0 = std::max(keys.begin, first * kChunk);
    const std::size_t k1 = std::min(keys.end, (first + 1) * kChunk);
    const auto key_offset = static_cast<std::int64_t>(k0) - static_cast<std::int64_t>(s.kv_len - 1);
    const std::size_t g_size = group();
    if (g_size > 1) {
      const std::size_t kv_head = local / chunks;
      kernels::DecodeMods mods[kernels::kDecodeGroupMax];
      for (std::size_t g0 = 0; g0 < g_size; g0 += kernels::kDecodeGroupMax) {
        const std::size_t h0 = kv_head * g_size + g0;
        const std::size_t rows = std::min(kernels::kDecodeGroupMax, g_size - g0);
        const HeadIo h = head_io(st_, s, io, h0);  // heads h0.. are adjacent columns of Q
        for (std::size_t g = 0; g < rows; ++g) {
          mods[g].softcap = st_.softcap;
          mods[g].alibi_slope = st_.alibi_slope(h0 + g);
          mods[g].key_offset = key_offset;
        }
        const std::size_t slot = s.first_slot + h0 * chunks + chunk;
        kernels::decode_chunk_group_paged(
            st_.isa, h.q, static_cast<std::ptrdiff_t>(head_dim), rows, h.pages, k0, k1 - k0,
            head_dim, st_.scale, partial_outs_ + slot * head_dim,
            static_cast<std::ptrdiff_t>(chunks * head_dim), partials_ + slot,
            static_cast<std::ptrdiff_t>(chunks), mods);
      }
      return;
    }
    const std::size_t head = local / chunks;
    const HeadIo h = head_io(st_, s, io, head);
    kernels::DecodeMods mods;  // the new token is at position kv_len - 1
    mods.softcap = st_.softcap;
    mods.alibi_slope = st_.alibi_slope(head);
    mods.key_offset = key_offset;
    const std::size_t slot = s.first_slot + head * chunks + chunk;
    kernels::decode_chunk_paged(st_.isa, h.q, h.pages, k0, k1 - k0, head_dim, st_.scale,
                                partial_outs_ + slot * head_dim, partials_ + slot, mods);
  }

  const EngineState& st_;
  std::span<SequenceCall> sequences_;
  std::size_t tasks_ = 0;
  bool any_decode_ = false;
  double bytes_ = 0;
  float* partial_outs_ = nullptr;
  kernels::DecodePartial* partials_ = nullptr;
};

}  // namespace

Status prepare_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                         double* cache_bytes) {
  AttentionPlan plan(st, sequences);
  if (Status e = plan.prepare(ws); !e.ok()) return e;
  if (cache_bytes != nullptr) *cache_bytes = plan.cache_bytes();
  return {};
}

void run_attention(const EngineState& st, Workspace& ws, std::span<SequenceCall> sequences,
                   const AttentionIo& io) {
  AttentionPlan plan(st, sequences);
  // prepare() succeeded before the caches were written: the workspace is large enough.
  (void)plan.prepare(ws);
  plan.run(ws, io);
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

}  // namespace attn::detail
