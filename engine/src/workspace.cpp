// The workspace policy: growing per-call buffers within the limit, and the pool.
#include "workspace.hpp"

#include <new>
#include <string>

namespace attn::detail {
namespace {

std::string bytes_text(std::size_t bytes) {
  return bytes == SIZE_MAX ? std::string("more than 2^64") : std::to_string(bytes);
}

}  // namespace

Status out_of_memory(const char* what, std::size_t bytes) {
  return {ErrorCode::kResourceExhausted,
          "cannot allocate " + bytes_text(bytes) + " bytes for " + what};
}

Status grow(Workspace& ws, AlignedBuffer& buffer, std::size_t floats, const char* what,
            std::size_t limit_bytes) {
  if (floats <= buffer.capacity()) return {};
  const std::size_t bytes = mul_or_max(floats, sizeof(float));
  if (limit_bytes > 0) {
    const std::size_t others = ws.buffer_bytes() - buffer.bytes();
    if (bytes > limit_bytes || others + bytes > limit_bytes) {
      ws.activations.release();
      ws.scratch.release();
      ws.extra.release();
      return {ErrorCode::kResourceExhausted,
              "this call needs " + bytes_text(bytes) + " bytes for " + what +
                  " (the workspace would hold " +
                  (bytes == SIZE_MAX ? std::string("more") : std::to_string(others + bytes)) +
                  " bytes), over max_workspace_bytes = " + std::to_string(limit_bytes)};
    }
  }
  if (!buffer.reserve(floats)) return out_of_memory(what, bytes);
  return {};
}

WorkspacePool::Lease WorkspacePool::acquire() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      std::unique_ptr<Workspace> ws = std::move(free_.back());
      free_.pop_back();
      return Lease(this, std::move(ws));
    }
  }
  return Lease(this, std::unique_ptr<Workspace>(new (std::nothrow) Workspace()));
}

void WorkspacePool::release(std::unique_ptr<Workspace> ws) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.size() < free_.capacity()) free_.push_back(std::move(ws));
  // else: more than kReserved concurrent callers; drop it rather than allocate here.
}

}  // namespace attn::detail
