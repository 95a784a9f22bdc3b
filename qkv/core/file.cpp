#include "qkv/core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "qkv/core/error.h"

namespace qkv {

namespace {
std::string errno_str() { return std::strerror(errno); }
std::atomic<uint64_t> g_tmp_counter{0};
}  // namespace

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  QKV_CHECK(fd >= 0, "cannot open '{}': {}", path, errno_str());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    QKV_CHECK(false, "cannot read '{}': {}", path,
              S_ISDIR(st.st_mode) ? "is a directory" : errno_str());
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      QKV_CHECK(false, "cannot read '{}': {}", path, errno_str());
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  QKV_CHECK(!ec, "cannot create directory '{}': {}", path, ec.message());
}

AtomicWriter::AtomicWriter(std::string path) : path_(std::move(path)) {
  tmp_ = fmt::format("{}.tmp.{}.{}", path_, ::getpid(), g_tmp_counter++);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  QKV_CHECK(fd_ >= 0, "cannot create '{}': {}", tmp_, errno_str());
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicWriter::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    QKV_CHECK(w > 0, "cannot write '{}': {}", tmp_, errno_str());
    p += w;
    n -= size_t(w);
  }
}

void AtomicWriter::commit() {
  QKV_CHECK(::fsync(fd_) == 0, "cannot sync '{}': {}", tmp_, errno_str());
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::string err = errno_str();
    ::unlink(tmp_.c_str());
    QKV_CHECK(false, "cannot rename '{}' to '{}': {}", tmp_, path_, err);
  }
  // Make the rename itself durable.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  QKV_CHECK(fd >= 0, "cannot open '{}': {}", path, errno_str());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    QKV_CHECK(false, "cannot map '{}': not a regular file", path);
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      QKV_CHECK(false, "cannot map '{}': {}", path, errno_str());
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace qkv
