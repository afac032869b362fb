// The error model of the public API: Status for operations, Result<T> for values.
// Nothing in attn throws across the API or aborts on a user's error; every failure is a
// Status whose message names the parameter or file and the values involved.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "attn/export.hpp"

namespace attn {

/// Classifies a failure so that callers can react without parsing messages.
enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,    ///< a size, shape, option or tensor is not acceptable
  kOutOfRange,         ///< e.g. more tokens than context_length, a full KV cache
  kResourceExhausted,  ///< allocation failed, or a size overflows what can be allocated
  kIoError,            ///< a file could not be opened, mapped, read or written
  kCorruptData,        ///< a file's contents are malformed
  kUnsupported,        ///< well-formed but not supported (a dtype, a format version, an ISA)
  kInternal,           ///< a bug in attn; please report it
  kUnavailable,        ///< another process did not answer in time (distributed calls)
};

/// Returns a short lower-case name ("invalid argument", ...).
ATTN_API const char* to_string(ErrorCode code) noexcept;

/// Success, or an error code with a message naming what was wrong.
class [[nodiscard]] ATTN_API Status {
 public:
  /// Creates a success status.
  Status() = default;
  /// Creates a status; `message` should name the parameter and the values involved.
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const noexcept { return code_ == ErrorCode::kOk; }
  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  /// Returns "ok" or "<code>: <message>".
  std::string to_string() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

/// A value or the Status that explains why there is none.
/// Preconditions: value() and operator-> only when ok().
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {}  // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  /// Returns the error, or a success status when ok().
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace attn
