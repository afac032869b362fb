// Helpers of the io tests: temporary files, hand-made safetensors/.npy bytes, error checks.
#pragma once

#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "attn/npy.hpp"
#include "attn/safetensors.hpp"
#include "attn/tensor.hpp"

namespace test {

/// A path in the temporary directory, unique in this process and across processes; the file
/// is removed when the object goes away.
class TempFile {
 public:
  explicit TempFile(std::string_view suffix = ".bin") {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("attn_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) +
              std::string(suffix)))
                .string();
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { std::remove(path_.c_str()); }

  const std::string& path() const { return path_; }
  /// Replaces the file's contents with `bytes`.
  void write(const std::vector<std::byte>& bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }

 private:
  std::string path_;
};

inline std::vector<std::byte> to_bytes(std::string_view s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

inline void append(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const std::size_t old = out.size();
  out.resize(old + n);
  if (n > 0) std::memcpy(out.data() + old, p, n);
}

/// Returns a safetensors file: the 8-byte length of `header` (or `header_len` when given),
/// the header, then `data_bytes` bytes of data (byte i = i % 251).
inline std::vector<std::byte> safetensors_bytes(std::string_view header, std::size_t data_bytes,
                                                std::uint64_t header_len = UINT64_MAX) {
  std::vector<std::byte> out;
  const std::uint64_t len = header_len == UINT64_MAX ? header.size() : header_len;
  append(out, &len, 8);
  append(out, header.data(), header.size());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i % 251));
  return out;
}

/// Returns a .npy file of version major.0 with `header` (padded, newline-terminated) and
/// `data_bytes` zero bytes.
inline std::vector<std::byte> npy_bytes(std::string header, std::size_t data_bytes, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::vector<std::byte> out = to_bytes("\x93NUMPY");
  out.push_back(static_cast<std::byte>(major));
  out.push_back(std::byte{0});
  if (major == 1) {
    const auto len = static_cast<std::uint16_t>(header.size());
    append(out, &len, 2);
  } else {
    const auto len = static_cast<std::uint32_t>(header.size());
    append(out, &len, 4);
  }
  append(out, header.data(), header.size());
  out.resize(out.size() + data_bytes);
  return out;
}

/// Requires that `status` failed with `code` and that its message contains every fragment.
inline void require_error(const attn::Status& status, attn::ErrorCode code,
                          std::initializer_list<std::string_view> fragments) {
  INFO("status: " << status.to_string());
  REQUIRE_FALSE(status.ok());
  CHECK(status.code() == code);
  for (std::string_view f : fragments) CHECK(status.message().find(f) != std::string::npos);
}

/// Opens `bytes` both as a mapped file and from memory; requires the same outcome from both
/// and returns the file's.
inline attn::Result<attn::io::SafetensorsFile> open_both(const std::vector<std::byte>& bytes) {
  TempFile file(".safetensors");
  file.write(bytes);
  attn::Result<attn::io::SafetensorsFile> mapped = attn::io::SafetensorsFile::open(file.path());
  attn::Result<attn::io::SafetensorsFile> memory =
      attn::io::SafetensorsFile::from_bytes(bytes, file.path());
  REQUIRE(mapped.ok() == memory.ok());
  REQUIRE(mapped.status().to_string() == memory.status().to_string());
  return mapped;
}

/// Returns the path of a file in tests/data.
inline std::string data_path(std::string_view name) {
  return std::string(ATTN_TEST_DATA_DIR) + "/" + std::string(name);
}

/// Opens tests/data/NAME.safetensors; fails the test when it cannot.
inline attn::io::SafetensorsFile open_fixture(const std::string& name) {
  auto file = attn::io::SafetensorsFile::open(data_path(name + ".safetensors"));
  INFO(file.status().to_string());
  REQUIRE(file.ok());
  return file.value();
}

/// Reads tests/data/FILE (an .npy); fails the test when it cannot.
inline attn::Tensor read_fixture(const std::string& file) {
  auto t = attn::io::read_npy(data_path(file));
  INFO(t.status().to_string());
  REQUIRE(t.ok());
  return t.value();
}

}  // namespace test
