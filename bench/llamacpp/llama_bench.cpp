// The llama.cpp side of bench/generate_vs_llamacpp.sh: prefill and greedy decode on a GGUF model,
// timed exactly as `qkv bench generate` times itself (one batch of prompt tokens, then one token
// at a time with the KV cache, argmax between steps). It loads a prebuilt libllama at run time
// (npm package @node-llama-cpp/linux-x64, installed by the script), so qkv never links it.
//
//   llama_bench LIBDIR MODEL.gguf [--threads 2] [--prompt-tokens 128] [--new-tokens 32]
//               [--steps 3] [--ids FILE] [--logits-out FILE]
//
// The few C API entry points are declared here from llama.h's documented signatures. Parameter
// structs are passed as opaque byte blocks larger than the real ones (returned and passed in
// memory on x86-64, so the library reads only its own prefix); the batch struct is declared
// field by field.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Batch {
  int32_t n_tokens;
  int32_t* token;
  float* embd;
  int32_t* pos;
  int32_t* n_seq_id;
  int32_t** seq_id;
  int8_t* logits;
};
struct Opaque {
  alignas(16) unsigned char bytes[2048];
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "llama_bench: %s\n", msg.c_str());
  std::exit(1);
}

template <typename F>
F sym(void* h, const char* name) {
  void* p = dlsym(h, name);
  if (!p) die(std::string("libllama has no symbol ") + name);
  return reinterpret_cast<F>(p);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: llama_bench LIBDIR MODEL.gguf [options]");
  const std::string libdir = argv[1], model_path = argv[2];
  int threads = 2, prompt_tokens = 128, new_tokens = 32, steps = 3;
  std::string ids_file, logits_out;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--prompt-tokens")
      prompt_tokens = std::stoi(v);
    else if (k == "--new-tokens")
      new_tokens = std::stoi(v);
    else if (k == "--steps")
      steps = std::stoi(v);
    else if (k == "--ids")
      ids_file = v;
    else if (k == "--logits-out")
      logits_out = v;
    else
      die("unknown option " + k);
  }
  void* h = dlopen((libdir + "/libllama.v0.5.0.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) h = dlopen((libdir + "/libllama.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) die(std::string("cannot load libllama from ") + libdir + ": " + dlerror());

  using LogCb = void (*)(int, const char*, void*);
  sym<void (*)(LogCb, void*)>(h, "llama_log_set")([](int, const char*, void*) {}, nullptr);
  sym<void (*)(const char*)>(h, "ggml_backend_load_all_from_path")(libdir.c_str());
  sym<void (*)()>(h, "llama_backend_init")();
  Opaque mp = sym<Opaque (*)()>(h, "llama_model_default_params")();
  void* model =
      sym<void* (*)(const char*, Opaque)>(h, "llama_model_load_from_file")(model_path.c_str(), mp);
  if (!model) die("llama.cpp could not load " + model_path);
  const void* vocab = sym<const void* (*)(const void*)>(h, "llama_model_get_vocab")(model);
  const int V = sym<int32_t (*)(const void*)>(h, "llama_vocab_n_tokens")(vocab);
  Opaque cp = sym<Opaque (*)()>(h, "llama_context_default_params")();
  // The context parameters start n_ctx, n_batch, n_ubatch, n_seq_max (uint32), n_threads,
  // n_threads_batch (int32): checked against their documented defaults before writing.
  uint32_t head[6];
  std::memcpy(head, cp.bytes, sizeof head);
  if (head[3] != 1 || head[1] < head[2]) die("unexpected llama_context_params layout");
  head[0] = uint32_t(std::max(512, prompt_tokens + new_tokens));  // n_ctx
  head[1] = head[2] = uint32_t(std::max(512, prompt_tokens));     // n_batch, n_ubatch
  head[4] = head[5] = uint32_t(threads);
  std::memcpy(cp.bytes, head, sizeof head);
  void* ctx = sym<void* (*)(void*, Opaque)>(h, "llama_init_from_model")(model, cp);
  if (!ctx) die("llama.cpp could not create a context");
  sym<void (*)(void*, int32_t, int32_t)>(h, "llama_set_n_threads")(ctx, threads, threads);
  auto batch_get_one = sym<Batch (*)(int32_t*, int32_t)>(h, "llama_batch_get_one");
  auto decode = sym<int32_t (*)(void*, Batch)>(h, "llama_decode");
  auto logits_ith = sym<float* (*)(void*, int32_t)>(h, "llama_get_logits_ith");
  auto get_memory = sym<void* (*)(void*)>(h, "llama_get_memory");
  auto memory_clear = sym<void (*)(void*, bool)>(h, "llama_memory_clear");

  std::vector<int32_t> prompt;
  if (!ids_file.empty()) {
    std::ifstream in(ids_file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    for (char& c : s)
      if (c == '[' || c == ']' || c == ',') c = ' ';
    std::istringstream is(s);
    for (int64_t v; is >> v;) prompt.push_back(int32_t(v));
    prompt_tokens = int(prompt.size());
  } else {
    uint64_t x = 9;
    for (int i = 0; i < prompt_tokens; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      prompt.push_back(int32_t((x >> 33) % uint64_t(V)));
    }
  }
  using Clock = std::chrono::steady_clock;
  std::vector<double> pre, dec;
  std::vector<int32_t> greedy;
  for (int r = -1; r < steps; ++r) {
    memory_clear(get_memory(ctx), true);
    std::vector<int32_t> p = prompt;
    auto t0 = Clock::now();
    if (decode(ctx, batch_get_one(p.data(), int32_t(p.size()))) != 0) die("llama_decode failed");
    const float* l = logits_ith(ctx, -1);
    const double tp = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r == -1 && !logits_out.empty()) {
      std::ofstream o(logits_out, std::ios::binary);
      o.write(reinterpret_cast<const char*>(l), std::streamsize(sizeof(float) * size_t(V)));
    }
    int32_t next = int32_t(std::max_element(l, l + V) - l);
    if (r == -1) greedy.push_back(next);
    t0 = Clock::now();
    for (int i = 0; i < new_tokens; ++i) {
      if (decode(ctx, batch_get_one(&next, 1)) != 0) die("llama_decode failed");
      l = logits_ith(ctx, -1);
      next = int32_t(std::max_element(l, l + V) - l);
      if (r == -1) greedy.push_back(next);
    }
    const double td = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r >= 0) {
      pre.push_back(tp);
      if (new_tokens > 0) dec.push_back(td / new_tokens);
    }
  }
  std::printf("{\"prefill_tokens_per_sec\": %.3f, \"decode_tokens_per_sec\": %.3f, \"greedy\": [",
              prompt_tokens / median(pre), new_tokens > 0 ? 1.0 / median(dec) : 0.0);
  for (size_t i = 0; i < greedy.size(); ++i) std::printf("%s%d", i ? ", " : "", greedy[i]);
  std::printf("]}\n");
  sym<void (*)(void*)>(h, "llama_free")(ctx);
  sym<void (*)(void*)>(h, "llama_model_free")(model);
  return 0;
}
