#include "qkv/io/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/file.h"

namespace qkv {

namespace {

class MapStorage final : public Storage {
 public:
  explicit MapStorage(const std::string& path) : file_(path) {}
  void* data() override { return const_cast<uint8_t*>(file_.data()); }
  size_t nbytes() const override { return file_.size(); }
  const MappedFile& file() const { return file_; }

 private:
  MappedFile file_;
};

constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MB, as the reference implementation

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto ms = std::make_shared<MapStorage>(path);
  const uint8_t* base = ms->file().data();
  const size_t size = ms->file().size();
  map_ = ms;
  QKV_CHECK(size >= 8, "{}: not a safetensors file (only {} bytes)", path, size);
  uint64_t hlen = 0;
  std::memcpy(&hlen, base, 8);
  QKV_CHECK(hlen <= kMaxHeader && hlen <= size - 8,
            "{}: header length {} is larger than the file ({} bytes)", path, hlen, size);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + hlen);
  } catch (const std::exception& e) {
    QKV_CHECK(false, "{}: header is not valid JSON ({})", path, e.what());
  }
  QKV_CHECK(header.is_object(), "{}: header is not a JSON object", path);
  data_start_ = 8 + hlen;
  const size_t data_size = size - data_start_;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      QKV_CHECK(v.is_object(), "{}: __metadata__ is not an object", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        QKV_CHECK(m.value().is_string(), "{}: metadata '{}' is not a string", path, m.key());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    QKV_CHECK(
        v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
        "{}: tensor '{}' lacks dtype, shape or data_offsets", path, name);
    QKV_CHECK(v["dtype"].is_string(), "{}: tensor '{}' dtype is not a string", path, name);
    Entry e{};
    std::string dt = v["dtype"].get<std::string>();
    QKV_CHECK(dtype_from_name(dt, &e.dtype), "{}: tensor '{}' has unsupported dtype '{}'", path,
              name, dt);
    QKV_CHECK(v["shape"].is_array(), "{}: tensor '{}' shape is not an array", path, name);
    unsigned __int128 numel = 1;
    for (const auto& d : v["shape"]) {
      QKV_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                "{}: tensor '{}' has a bad dimension {}", path, name, d.dump());
      uint64_t dim = d.get<uint64_t>();
      QKV_CHECK(dim < (1ull << 40), "{}: tensor '{}' dimension {} is absurd", path, name, dim);
      e.shape.push_back(int64_t(dim));
      numel *= dim;
      QKV_CHECK(numel < (unsigned __int128)(1) << 62, "{}: tensor '{}' is absurdly large", path,
                name);
    }
    const auto& off = v["data_offsets"];
    QKV_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                  off[1].is_number_unsigned(),
              "{}: tensor '{}' data_offsets must be two non-negative integers", path, name);
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    QKV_CHECK(
        e.begin <= e.end && e.end <= data_size,
        "{}: tensor '{}' data_offsets [{}, {}] lie outside the {} data bytes (truncated file?)",
        path, name, e.begin, e.end, data_size);
    const unsigned __int128 want = numel * dtype_size(e.dtype);
    QKV_CHECK(want == e.end - e.begin,
              "{}: tensor '{}' shape {} {} needs {} bytes but data_offsets give {}", path, name,
              shape_to_string(e.shape), dt, uint64_t(want), e.end - e.begin);
    ranges.emplace_back(e.begin, e.end);
    tensors_[name] = std::move(e);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    QKV_CHECK(ranges[i].first >= ranges[i - 1].second, "{}: tensors overlap in the data section",
              path);
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  QKV_CHECK(it != tensors_.end(), "{}: missing tensor '{}'", path_, name);
  const Entry& e = it->second;
  const size_t esz = dtype_size(e.dtype);
  const size_t byte_off = data_start_ + e.begin;
  if (byte_off % esz == 0) return Tensor(map_, e.shape, e.dtype, int64_t(byte_off / esz));
  // Misaligned data (legal in the format): copy it out.
  Tensor t(e.shape, e.dtype);
  std::memcpy(t.raw(), static_cast<const char*>(map_->data()) + byte_off, e.end - e.begin);
  return t;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

void save_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t off = 0;
  for (const auto& t : tensors) {
    size_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= size_t(d);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // keep the data 8-byte aligned
  uint64_t hlen = h.size();
  AtomicWriter w(path);
  w.write(&hlen, 8);
  w.write(h.data(), h.size());
  for (const auto& t : tensors) {
    size_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= size_t(d);
    w.write(t.data, n);
  }
  w.commit();
}

void read_float_weights(const Tensor& t, float* dst, const std::string& path,
                        const std::string& name, const char* expected) {
  QKV_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16,
            "{}: tensor '{}' has dtype {}, expected {}", path, name, dtype_name(t.dtype()),
            expected);
  const Tensor f32 = t.to_f32();
  const size_t n = size_t(t.numel());
  std::memcpy(dst, f32.raw(), n * sizeof(float));
  for (size_t i = 0; i < n; ++i)
    QKV_CHECK(std::isfinite(dst[i]), "{}: tensor '{}' holds a non-finite value at index {}", path,
              name, i);
}

}  // namespace qkv
