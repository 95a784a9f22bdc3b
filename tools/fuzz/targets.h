// Fuzz entry points: each takes arbitrary bytes and must never crash, read out of bounds or
// leak; bad input may only throw qkv::Error. Used by the libFuzzer drivers (fuzz_main.cpp) and by
// the regression test that replays tests/data/fuzz/<target>/*.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qkv::fuzz {

int safetensors(const uint8_t* data, size_t size);
int config_json(const uint8_t* data, size_t size);
// Input: vocab.json bytes, a NUL, merges.txt bytes.
int bpe_files(const uint8_t* data, size_t size);
// GPT-2 encode/decode round trip (GPT-2 files from QKV_GPT2_DIR, default ../shared/data/gpt2).
int bpe_encode(const uint8_t* data, size_t size);

// Runs target `name` on one input; false if the name is unknown.
bool run(const std::string& name, const std::string& input);

}  // namespace qkv::fuzz
