// libFuzzer driver: QKV_FUZZ_TARGET names the entry point in targets.h (set per executable).
#include "tools/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qkv::fuzz::QKV_FUZZ_TARGET(data, size);
}
