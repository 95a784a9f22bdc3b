// Paths the tests use: the source tree, a fresh temporary directory, the shared data folder.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace qkv::test {

inline std::string source_dir() { return QKV_SOURCE_DIR; }
inline std::string qkv_exe() { return QKV_EXE; }
// ../shared/data next to the checkout (CI lays shared/ beside the clone).
inline std::string shared_data() { return source_dir() + "/../shared/data"; }

inline std::string temp_dir(const std::string& tag) {
  std::string base = std::filesystem::temp_directory_path().string() + "/qkv_test_" + tag + "_" +
                     std::to_string(::getpid()) + "_" + std::to_string(std::rand());
  std::filesystem::remove_all(base);
  std::filesystem::create_directories(base);
  return base;
}

// Runs a shell command; returns its exit status (or -1).
inline int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace qkv::test
