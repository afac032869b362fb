// The cache pool (attn/cache_pool.hpp): blocks, reference counts, and the all-or-nothing
// reservation of a call's blocks.
#include "cache_pool.hpp"

#include <algorithm>
#include <new>
#include <string>

#include "attn/cache_pool.hpp"
#include "attn/engine.hpp"
#include "engine_state.hpp"
#include "kernels/kernels.hpp"
#include "session_state.hpp"
#include "workspace.hpp"

namespace attn {
namespace {

// B: the flash kernel's key block (kernels::kPageMultiple). A larger B would let a decode chunk
// (512 keys) lie in one block too, but rounds every session up to more memory: with prompts of
// 128..2048 tokens, B = 512 wastes ~20% of the live KV bytes, B = 128 ~5%.
constexpr std::size_t kBlockPositions = kernels::kPageMultiple;
static_assert((kBlockPositions & (kBlockPositions - 1)) == 0, "a power of two");

}  // namespace

Status CachePoolState::exhausted(std::size_t n) const {
  return Status(ErrorCode::kResourceExhausted,
                "KV cache pool exhausted: pool of " + std::to_string(blocks * block_bytes()) +
                    " bytes (" + std::to_string(blocks) + " blocks of " +
                    std::to_string(block_positions) + " positions), " +
                    std::to_string(used_blocks * block_bytes()) + " bytes in use, " +
                    std::to_string(n * block_bytes()) + " bytes asked");
}

void CachePoolState::share(std::span<const std::uint32_t> ids) noexcept {
  std::lock_guard lock(mutex);
  for (std::uint32_t id : ids) ++refs[id];
}

void CachePoolState::give_back(std::span<const std::uint32_t> ids) noexcept {
  std::lock_guard lock(mutex);
  for (std::uint32_t id : ids) {
    if (--refs[id] == 0) {
      free_list.push_back(id);  // capacity reserved for every block: no allocation
      --used_blocks;
    }
  }
}

std::uint32_t CachePoolState::refs_of(std::uint32_t id) const noexcept {
  std::lock_guard lock(mutex);
  return refs[id];
}

const char* kv_type_name(kernels::KvType type) noexcept {
  switch (type) {
    case kernels::KvType::kF32:
      return "f32";
    case kernels::KvType::kBf16:
      return "bf16";
    case kernels::KvType::kF16:
      return "f16";
    case kernels::KvType::kInt8:
      return "int8";
  }
  return "unknown";
}

std::size_t kv_block_bytes(std::size_t kv_heads, std::size_t head_dim, kernels::KvType type,
                           std::size_t block_positions) noexcept {
  const std::size_t rows = 2 * kv_heads * block_positions;
  const std::size_t bytes = rows * head_dim * kernels::kv_type_bytes(type) +
                            (type == kernels::KvType::kInt8 ? rows * sizeof(float) : 0);
  return (bytes + 63) / 64 * 64;  // every block 64-byte aligned
}

Result<std::shared_ptr<CachePoolState>> make_pool(std::size_t kv_heads, std::size_t head_dim,
                                                  kernels::KvType type, std::size_t blocks) {
  const std::size_t block_bytes = kv_block_bytes(kv_heads, head_dim, type, kBlockPositions);
  const std::size_t floats = detail::mul_or_max(blocks, block_bytes / sizeof(float));
  if (blocks > UINT32_MAX) {
    return Status(ErrorCode::kInvalidArgument,
                  "cache pool: " + std::to_string(blocks) + " blocks exceed 2^32 - 1");
  }
  try {
    auto p = std::make_shared<CachePoolState>();
    p->kv_heads = kv_heads;
    p->head_dim = head_dim;
    p->block_positions = kBlockPositions;
    p->kv_type = type;
    p->scale_offset = 2 * kv_heads * kBlockPositions * head_dim * kernels::kv_type_bytes(type);
    p->bytes_per_block = block_bytes;
    p->blocks = blocks;
    if (!p->memory.reserve(floats)) {
      return detail::out_of_memory("the key/value cache pool",
                                   detail::mul_or_max(floats, sizeof(float)));
    }
    p->refs.assign(blocks, 0);
    p->free_list.resize(blocks);
    // Lowest ids on top of the stack: a new pool hands out memory in address order.
    for (std::size_t i = 0; i < blocks; ++i)
      p->free_list[i] = static_cast<std::uint32_t>(blocks - 1 - i);
    return p;
  } catch (const std::bad_alloc&) {
    return detail::out_of_memory("the cache pool's block lists",
                                 detail::mul_or_max(blocks, 2 * sizeof(std::uint32_t)));
  }
}

CachePool::CachePool(std::shared_ptr<CachePoolState> state) : state_(std::move(state)) {}

Result<CachePool> CachePool::create(const Engine& engine, std::size_t budget_bytes) {
  const EngineState& st = *engine.state_;
  if (!st.causal) {
    return Status(ErrorCode::kInvalidArgument,
                  "cache pool: KV-cache sessions need causal attention");
  }
  const std::size_t block_bytes =
      kv_block_bytes(st.kv_heads, st.head_dim, st.kv_type, kBlockPositions);
  const std::size_t blocks = budget_bytes / block_bytes;
  if (blocks == 0) {
    return Status(
        ErrorCode::kInvalidArgument,
        "cache pool: budget_bytes = " + std::to_string(budget_bytes) + " is below one block (" +
            std::to_string(block_bytes) + " bytes: " + std::to_string(kBlockPositions) +
            " positions of " + std::to_string(st.kv_heads) + " kv heads x head_dim " +
            std::to_string(st.head_dim) + " in " + kv_type_name(st.kv_type) + ", keys and values)");
  }
  Result<std::shared_ptr<CachePoolState>> p =
      make_pool(st.kv_heads, st.head_dim, st.kv_type, blocks);
  if (!p.ok()) return p.status();
  return CachePool(std::move(p.value()));
}

std::int64_t CachePool::block_positions() const noexcept {
  return static_cast<std::int64_t>(state_->block_positions);
}
std::size_t CachePool::block_bytes() const noexcept { return state_->block_bytes(); }
std::size_t CachePool::capacity_bytes() const noexcept {
  return state_->blocks * state_->block_bytes();
}
std::size_t CachePool::used_bytes() const noexcept {
  std::lock_guard lock(state_->mutex);
  return state_->used_blocks * state_->block_bytes();
}
std::size_t CachePool::peak_used_bytes() const noexcept {
  std::lock_guard lock(state_->mutex);
  return state_->peak_blocks * state_->block_bytes();
}
void CachePool::reset_peak() noexcept {
  std::lock_guard lock(state_->mutex);
  state_->peak_blocks = state_->used_blocks;
}

namespace detail {

Status reserve_blocks(std::span<SequenceCall> sequences) {
  // Blocks each sequence needs, asked of each pool once (its total), so that a pool's error
  // names everything the call asked of it. On a failure, the pools already served give back.
  for (SequenceCall& s : sequences) {
    if (s.cache != nullptr) s.blocks_before = s.cache->blocks.size();
  }
  auto need = [](const SequenceCall& s) {
    const std::size_t want = blocks_for(s.kv_len, s.cache->pool->block_positions);
    return want > s.blocks_before ? want - s.blocks_before : 0;
  };
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    SequenceCall& s = sequences[i];
    if (s.cache == nullptr) continue;
    CachePoolState* pool = s.cache->pool.get();
    bool seen = false;
    for (std::size_t j = 0; j < i && !seen; ++j)
      seen = sequences[j].cache != nullptr && sequences[j].cache->pool.get() == pool;
    if (seen) continue;
    std::size_t total = 0;
    for (std::size_t j = i; j < sequences.size(); ++j) {
      if (sequences[j].cache != nullptr && sequences[j].cache->pool.get() == pool)
        total += need(sequences[j]);
    }
    if (total == 0) continue;
    // Taken straight into the tables (their capacity covers context_length: no allocation).
    std::size_t j = i, left = need(s);
    Status e = pool->take(total, [&](std::uint32_t id) {
      while (left == 0) {
        ++j;
        if (sequences[j].cache != nullptr && sequences[j].cache->pool.get() == pool)
          left = need(sequences[j]);
      }
      sequences[j].cache->blocks.push_back(id);
      sequences[j].cache->block_ptrs.push_back(pool->block(id));
      --left;
    });
    if (!e.ok()) {
      unreserve_blocks(sequences);  // the pools served before this one give back
      return e;
    }
  }
  return {};
}

void unreserve_blocks(std::span<SequenceCall> sequences) noexcept {
  for (SequenceCall& s : sequences) {
    if (s.cache == nullptr || s.cache->blocks.size() <= s.blocks_before) continue;
    const std::span<const std::uint32_t> added(s.cache->blocks.data() + s.blocks_before,
                                               s.cache->blocks.size() - s.blocks_before);
    s.cache->pool->give_back(added);
    s.cache->blocks.resize(s.blocks_before);
    s.cache->block_ptrs.resize(s.blocks_before);
  }
}

}  // namespace detail
}  // namespace attn
