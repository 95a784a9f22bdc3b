#include "qkv/core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "qkv/core/error.h"

namespace qkv {

namespace {

class HeapStorage final : public Storage {
 public:
  explicit HeapStorage(size_t nbytes) : nbytes_(nbytes) {
    size_t padded = (nbytes + 63) / 64 * 64;
    ptr_ = std::aligned_alloc(64, padded == 0 ? 64 : padded);
    QKV_CHECK(ptr_ != nullptr, "[tensor] out of memory allocating {} bytes", nbytes);
    std::memset(ptr_, 0, padded == 0 ? 64 : padded);
  }
  ~HeapStorage() override { std::free(ptr_); }
  void* data() override { return ptr_; }
  size_t nbytes() const override { return nbytes_; }

 private:
  void* ptr_;
  size_t nbytes_;
};

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

std::shared_ptr<Storage> alloc_storage(size_t nbytes) {
  return std::make_shared<HeapStorage>(nbytes);
}

Tensor::Tensor(Shape shape, DType dtype)
    : shape_(std::move(shape)), strides_(contiguous_strides(shape_)), dtype_(dtype) {
  for (int64_t d : shape_) QKV_CHECK(d >= 0, "[tensor] negative dimension in {}", shape_str());
  storage_ = alloc_storage(size_t(shape_numel(shape_)) * dtype_size(dtype));
}

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, int64_t offset)
    : storage_(std::move(storage)),
      shape_(std::move(shape)),
      strides_(contiguous_strides(shape_)),
      offset_(offset),
      dtype_(dtype) {
  QKV_ASSERT((offset_ + numel()) * int64_t(dtype_size(dtype_)) <= int64_t(storage_->nbytes()));
}

int64_t Tensor::numel() const { return shape_numel(shape_); }

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw() const {
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_));
}

float* Tensor::f32() const {
  QKV_CHECK(dtype_ == DType::F32, "[tensor] expected F32, got {}", dtype_name(dtype_));
  return data<float>();
}

Tensor Tensor::to_f32() const {
  QKV_CHECK(is_contiguous(), "[tensor] to_f32 needs a contiguous tensor");
  Tensor out(shape_, DType::F32);
  float* dst = out.f32();
  int64_t n = numel();
  switch (dtype_) {
    case DType::F32:
      std::memcpy(dst, raw(), size_t(n) * 4);
      break;
    case DType::BF16: {
      const auto* s = data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::F16: {
      const auto* s = data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
    default:
      QKV_CHECK(false, "[tensor] cannot convert {} to F32", dtype_name(dtype_));
  }
  return out;
}

std::string shape_to_string(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string Tensor::shape_str() const { return shape_to_string(shape_); }

}  // namespace qkv
