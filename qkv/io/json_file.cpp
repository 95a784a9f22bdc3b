#include "qkv/io/json_file.h"

#include "qkv/core/error.h"
#include "qkv/core/file.h"

namespace qkv {

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    QKV_CHECK(false, "{}: not valid JSON ({})", path, e.what());
  }
  return {};
}

}  // namespace qkv
