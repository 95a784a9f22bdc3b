// Tensor: shared storage + shape + strides (in elements) + offset + dtype. CPU only for now;
// a device field joins when the CUDA backend lands. Kernels take raw pointers; Tensor is the
// vocabulary type at API boundaries (files, model parameters, logits).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qkv/core/dtype.h"

namespace qkv {

using Shape = std::vector<int64_t>;

// Raw bytes owned by something: an aligned heap block, or a memory-mapped file.
class Storage {
 public:
  virtual ~Storage() = default;
  virtual void* data() = 0;
  virtual size_t nbytes() const = 0;
};

// 64-byte aligned heap storage, zero-initialised.
std::shared_ptr<Storage> alloc_storage(size_t nbytes);

class Tensor {
 public:
  Tensor() = default;
  // Allocates a zeroed, contiguous tensor.
  Tensor(Shape shape, DType dtype = DType::F32);
  // A view on existing storage (contiguous from `offset` elements).
  Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, int64_t offset = 0);

  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  bool defined() const { return storage_ != nullptr; }
  bool is_contiguous() const;

  void* raw() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  float* f32() const;  // checks dtype

  // A contiguous copy converted to f32.
  Tensor to_f32() const;
  std::string shape_str() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;
};

std::string shape_to_string(const Shape& s);

}  // namespace qkv
