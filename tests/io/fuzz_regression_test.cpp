// Replays every input in tests/data/fuzz/<target>/ (hand-written nasty cases and whatever
// tools/fuzz/run.sh found) through the fuzz entry points: none may crash.
#include <gtest/gtest.h>

#include <filesystem>

#include "qkv/core/file.h"
#include "tests/test_paths.h"
#include "tools/fuzz/targets.h"

namespace qkv {
namespace {

TEST(FuzzRegression, EveryKeptInputRunsClean) {
  setenv("QKV_GPT2_DIR", (test::shared_data() + "/gpt2").c_str(), 1);
  const std::string root = test::source_dir() + "/tests/data/fuzz";
  int n = 0;
  for (const auto& dir : std::filesystem::directory_iterator(root)) {
    for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
      EXPECT_TRUE(fuzz::run(dir.path().filename().string(), read_file(f.path().string())))
          << f.path();
      ++n;
    }
  }
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace qkv
