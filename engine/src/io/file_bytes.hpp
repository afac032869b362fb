// Private helpers of the io module: a file's bytes (mapped read-only, or owned), writing a
// file, and little-endian loads that never read past a span.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attn/status.hpp"

namespace attn::io::detail {

/// The bytes of a file: a read-only private mapping (munmap on destruction) or an owned
/// copy. An empty file maps nothing and gives an empty span.
/// Thread safety: immutable after creation.
class FileBytes {
 public:
  FileBytes() = default;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  /// Maps `path`. Errors: kIoError naming the path and the system's reason.
  static Result<std::unique_ptr<FileBytes>> map(const std::string& path);
  /// Copies `bytes`.
  static std::unique_ptr<FileBytes> copy(std::span<const std::byte> bytes);

  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
  std::vector<std::byte> owned_;
};

/// Writes `bytes` to `path`: a regular (or new) file through a temporary file in the same
/// directory renamed over it, so a failed write never leaves a half-written file; anything
/// else (/dev/stdout, a pipe) directly. Errors: kIoError.
Status write_file(const std::string& path, std::span<const std::byte> bytes);

/// Returns the little-endian integer of `sizeof(T)` bytes at `p` (any alignment).
template <class T>
T load_le(const std::byte* p) noexcept {
  static_assert(std::endian::native == std::endian::little, "attn io assumes a little-endian host");
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Returns "<name>: <message>" as a Status of `code`.
inline Status file_error(ErrorCode code, std::string_view name, const std::string& message) {
  return {code, std::string(name) + ": " + message};
}

/// Runs `fn` (returning a Status or Result) and turns an escaping exception into a Status,
/// so nothing throws across the API: bad_alloc -> kResourceExhausted, others -> kInternal.
template <class F>
auto guard(std::string_view name, F&& fn) noexcept -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return file_error(ErrorCode::kResourceExhausted, name, "out of memory");
  } catch (const std::exception& e) {
    return file_error(ErrorCode::kInternal, name, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return file_error(ErrorCode::kInternal, name, "unexpected exception");
  }
}

}  // namespace attn::io::detail
