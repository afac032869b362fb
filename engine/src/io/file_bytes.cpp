// Read-only file mapping and crash-safe file writing for the io module.
#include "io/file_bytes.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace attn::io::detail {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

FileBytes::~FileBytes() {
  if (mapped_ && size_ > 0) ::munmap(const_cast<std::byte*>(data_), size_);
}

Result<std::unique_ptr<FileBytes>> FileBytes::map(const std::string& path) {
  Fd f;
  // O_NONBLOCK: opening a FIFO for reading would wait for a writer; fstat then refuses it.
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (f.fd < 0) return file_error(ErrorCode::kIoError, path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0)
    return file_error(ErrorCode::kIoError, path, "cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return file_error(ErrorCode::kIoError, path, "not a regular file");
  auto out = std::make_unique<FileBytes>();
  if (st.st_size == 0) return out;  // mmap of 0 bytes fails; an empty span says it all
  const auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) {
    return file_error(ErrorCode::kIoError, path,
                      "cannot map " + std::to_string(size) + " bytes: " + errno_text(errno));
  }
  out->data_ = static_cast<const std::byte*>(p);
  out->size_ = size;
  out->mapped_ = true;
  return out;
}

std::unique_ptr<FileBytes> FileBytes::copy(std::span<const std::byte> bytes) {
  auto out = std::make_unique<FileBytes>();
  out->owned_.assign(bytes.begin(), bytes.end());
  out->data_ = out->owned_.data();
  out->size_ = out->owned_.size();
  return out;
}

namespace {

// Writes all of `bytes` to `fd`; returns 0 or the errno of the failure.
int write_all(int fd, std::span<const std::byte> bytes, std::size_t& done) {
  done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

Status write_failed(const std::string& path, std::size_t done, int err) {
  return file_error(ErrorCode::kIoError, path,
                    "write failed after " + std::to_string(done) + " bytes: " + errno_text(err));
}

}  // namespace

Status write_file(const std::string& path, std::span<const std::byte> bytes) {
  struct stat st {};
  std::size_t done = 0;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    Fd f;
    f.fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (f.fd < 0) return file_error(ErrorCode::kIoError, path, "cannot open: " + errno_text(errno));
    if (int err = write_all(f.fd, bytes, done); err != 0) return write_failed(path, done, err);
    return {};
  }
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  Fd f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) return file_error(ErrorCode::kIoError, path, "cannot create: " + errno_text(errno));
  if (int err = write_all(f.fd, bytes, done); err != 0) {
    ::unlink(tmp.c_str());
    return write_failed(path, done, err);
  }
  const int rc = ::close(f.fd);
  f.fd = -1;
  if (rc != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return write_failed(path, done, err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return file_error(ErrorCode::kIoError, path, "cannot replace: " + errno_text(err));
  }
  return {};
}

}  // namespace attn::io::detail
