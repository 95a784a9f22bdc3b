// Checked file I/O: every failure becomes a qkv::Error naming the path and the reason.
// Writes go to a temporary file in the same folder, are fsync'ed, then renamed into place,
// so a reader (or a run killed mid-write) never sees a half-written file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace qkv {

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);
void make_dirs(const std::string& path);

// Writes `data` to `path` atomically (temporary + fsync + rename).
void write_file_atomic(const std::string& path, std::string_view data);

// Streams chunks into a temporary file, then commit() renames it into place. Destroying an
// uncommitted writer removes the temporary.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  void write(const void* data, size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qkv
