// Chooses the instruction-set build of the CPU kernels once, from the CPU and QKV_ISA.
#include <cpuid.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/cpu/isa_table.h"
#include "qkv/core/dtype.h"
#include "qkv/core/error.h"

namespace qkv::cpu {

namespace amx {
bool request_permission();
double peak_probe(int64_t iters);
void gemm_bf16(bool, bool, int, int, int, float, const float*, int64_t, const float*, int64_t,
               float, float*, int64_t);
}  // namespace amx

namespace dpbf16 {
bool supported();
double peak_probe(int64_t iters);
void gemm_bf16(bool, bool, int, int, int, float, const float*, int64_t, const float*, int64_t,
               float, float*, int64_t);
}  // namespace dpbf16

namespace {

bool cpu_has_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (d & (1u << 22)) && (d & (1u << 24)) && (d & (1u << 25));  // AMX-BF16, -TILE, -INT8
}

// AMX needs the kernel's permission for the tile data state, asked once per process.
bool& amx_enabled() {
  static bool on = cpu_has_amx_bf16() && amx::request_permission();
  return on;
}

// op(X) rounded to bf16 and back, into a row-major scratch matrix (rows x cols).
void round_bf16(std::vector<float>& dst, const float* X, int64_t ld, bool trans, int rows,
                int cols) {
  dst.resize(size_t(rows) * size_t(cols));
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      dst[size_t(i) * size_t(cols) + size_t(j)] =
          bf16_to_f32(f32_to_bf16(trans ? X[int64_t(j) * ld + i] : X[int64_t(i) * ld + j]));
}

struct Choice {
  const IsaTable* table;
  const char* name;
};

bool cpu_has(const std::string& name) {
  __builtin_cpu_init();
  if (name == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return name == "generic";
}

Choice make_choice(const std::string& name) {
  if (name == "avx512") return {&avx512::kTable, "avx512"};
  if (name == "avx2") return {&avx2::kTable, "avx2"};
  return {&generic::kTable, "generic"};
}

Choice initial_choice() {
  const char* env = std::getenv("QKV_ISA");
  if (env != nullptr && *env != '\0') {
    std::string want = env;
    if ((want == "avx512" || want == "avx2" || want == "generic") && cpu_has(want))
      return make_choice(want);
  }
  for (const char* name : {"avx512", "avx2"})
    if (cpu_has(name)) return make_choice(name);
  return make_choice("generic");
}

Choice& choice() {
  static Choice c = initial_choice();
  return c;
}

const IsaTable& k() { return *choice().table; }

}  // namespace

const IsaTable& isa_table() { return k(); }
const char* isa_name() { return choice().name; }

bool isa_supported(const std::string& name) { return cpu_has(name); }

void set_isa(const std::string& name) {
  QKV_CHECK(name == "avx512" || name == "avx2" || name == "generic",
            "[cpu] unknown ISA '{}' (expected avx512, avx2 or generic)", name);
  QKV_CHECK(cpu_has(name), "[cpu] this CPU does not support {}", name);
  choice() = make_choice(name);
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue* ep) {
  k().gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}
void gemm_epilogue(const GemmEpilogue& ep, float* C, int64_t ldc, int M, int N) {
  k().gemm_epilogue(ep, C, ldc, M, N);
}
bool amx_available() { return amx_enabled(); }
double amx_probe(int64_t iters) { return amx_enabled() ? amx::peak_probe(iters) : 0.0; }
void set_amx(bool on) { amx_enabled() = on && cpu_has_amx_bf16() && amx::request_permission(); }

// The AVX512-BF16 path needs the AVX-512 kernel table too (QKV_ISA=avx2 turns both off).
static bool dpbf16_usable() { return dpbf16::supported() && std::string(isa_name()) == "avx512"; }
static bool& dpbf16_enabled() {
  static bool on = dpbf16_usable();
  return on;
}
bool avx512bf16_available() { return dpbf16_enabled(); }
double avx512bf16_probe(int64_t iters) {
  return dpbf16_enabled() ? dpbf16::peak_probe(iters) : 0.0;
}
void set_avx512bf16(bool on) { dpbf16_enabled() = on && dpbf16_usable(); }
const char* bf16_engine() {
  return amx_enabled() ? "AMX" : dpbf16_enabled() ? "AVX512-BF16" : "fp32 FMA";
}

void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
               const GemmEpilogue* ep) {
  if (M <= 0 || N <= 0) return;
  if (amx_enabled() && K > 0) {
    amx::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (ep) gemm_epilogue(*ep, C, ldc, M, N);
    return;
  }
  if (dpbf16_enabled() && K > 0) {
    dpbf16::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (ep) gemm_epilogue(*ep, C, ldc, M, N);
    return;
  }
  // Neither: the same bf16 products (exact in fp32) through the fp32 kernel.
  static thread_local std::vector<float> a, b;
  round_bf16(a, A, lda, ta, M, K);
  round_bf16(b, B, ldb, tb, K, N);
  gemm(false, false, M, N, K, alpha, a.data(), K, b.data(), N, beta, C, ldc, ep);
}

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                     int Tt, int C) {
  k().encoder_forward(out, inp, wte, wpe, B, Tt, C);
}
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                      int Tt, int C) {
  k().encoder_backward(dwte, dwpe, dout, inp, B, Tt, C);
}
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps) {
  k().layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
}
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int C) {
  k().layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void bias_forward(float* out, const float* bias, int64_t N, int OC) {
  k().bias_forward(out, bias, N, OC);
}
void bias_backward(float* dbias, const float* dout, int64_t N, int OC) {
  k().bias_backward(dbias, dout, N, OC);
}
void gelu_forward(float* out, const float* inp, int64_t n) { k().gelu_forward(out, inp, n); }
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  k().gelu_backward(dinp, inp, dout, n);
}
void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  k().residual_forward(out, a, b, n);
}
void residual_layernorm_forward(float* res, const float* add, float* out, float* mean, float* rstd,
                                const float* weight, const float* bias, int64_t N, int C,
                                float eps) {
  k().residual_layernorm_forward(res, add, out, mean, rstd, weight, bias, N, C, eps);
}
void residual_rmsnorm_forward(float* res, const float* add, float* out, float* rstd,
                              const float* weight, int64_t N, int C, float eps) {
  k().residual_rmsnorm_forward(res, add, out, rstd, weight, N, C, eps);
}
// Argument invariants every attention kernel relies on (a caller bug, not user input).
static void check_attn(const AttnArgs<float>& a) {
  QKV_ASSERT(a.kv_group >= 1 && a.NH % a.kv_group == 0);
  QKV_ASSERT(a.kind != AttnKind::Linear || (a.kv_group == 1 && a.alibi == nullptr));
}
void attention_forward(const AttnArgs<float>& a) {
  check_attn(a);
  k().attention_forward(a);
}
void attention_backward(const AttnArgs<float>& a) {
  check_attn(a);
  k().attention_backward(a);
}
void release_attention_scratch() { k().release_attention_scratch(); }
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int C, float eps) {
  k().rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
}
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C) {
  k().rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
}
void relu_forward(float* out, const float* inp, int64_t n) { k().relu_forward(out, inp, n); }
void swiglu_forward(float* out, const float* inp, int64_t N, int H) {
  k().swiglu_forward(out, inp, N, H);
}
void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t N, int H) {
  k().swiglu_backward(dinp, inp, dout, N, H);
}
void relu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  k().relu_backward(dinp, inp, dout, n);
}
void attention_probs(const AttnArgs<float>& a, int b, int h, float* out) {
  k().attention_probs(a, b, h, out);
}
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int64_t N, int V) {
  k().crossentropy_forward(losses, lse, logits, targets, N, V);
}
void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int64_t N, int V) {
  k().crossentropy_backward(dlogits, logits, lse, targets, dlosses, N, V);
}
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float wd, float bc1, float bc2, float gscale) {
  k().adamw_update(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gscale);
}
void adamw_update_segments(float* p, const float* g, float* m, float* v, const AdamWSegment* segs,
                           int nseg, float lr, float beta1, float beta2, float eps, float bc1,
                           float bc2, float gscale) {
  k().adamw_update_segments(p, g, m, v, segs, nseg, lr, beta1, beta2, eps, bc1, bc2, gscale);
}
double sum_squares(const float* x, int64_t n) { return k().sum_squares(x, n); }
void scale(float* x, int64_t n, float s) { k().scale(x, n, s); }
double fma_probe(int64_t iters) { return k().fma_probe(iters); }

}  // namespace qkv::cpu
