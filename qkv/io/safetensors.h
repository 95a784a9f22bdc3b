// safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names
// to {dtype, shape, data_offsets}, then the raw little-endian data. Reading memory-maps the file
// and validates every offset and shape before anything is used; writing is atomic.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qkv/core/tensor.h"

namespace qkv {

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws qkv::Error naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // A zero-copy view of the named tensor (keeps the mapping alive); throws if missing.
  Tensor get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    DType dtype;
    Shape shape;
    size_t begin, end;
  };
  std::string path_;
  std::shared_ptr<Storage> map_;
  size_t data_start_ = 0;
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Copies a floating-point tensor (F32, F16 or BF16) into dst as float32: throws naming the file
// and tensor if its dtype is another or it holds a non-finite value. `expected` lists the
// dtypes the caller accepts, for the message.
void read_float_weights(const Tensor& t, float* dst, const std::string& path,
                        const std::string& name, const char* expected = "F32, F16 or BF16");

// A tensor to write: raw bytes described by dtype and shape (not owned).
struct TensorRef {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;
};

// Writes tensors (in the given order) and string metadata to `path` atomically.
void save_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace qkv
