// Reading a JSON file with errors that name it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qkv {

// Parses `path`; throws qkv::Error "PATH: cannot open ..." or "PATH: not valid JSON (...)".
nlohmann::json read_json_file(const std::string& path);

}  // namespace qkv
