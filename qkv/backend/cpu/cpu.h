// The CPU backend: vectorised (AVX-512, AVX2+FMA, or portable SSE2 chosen at run time) and
// multi-threaded (OpenMP, static splits, so results are deterministic for a thread count).
// Same families and conventions as qkv/backend/ref/ref.h, in float.
#pragma once

#include <cstdint>
#include <string>

#include "qkv/backend/kernel_args.h"
#include "qkv/core/aligned.h"

namespace qkv::cpu {

// The instruction set the kernels run with: "avx512", "avx2" or "generic". Chosen once from
// the CPU; the environment variable QKV_ISA can force a lower one (for tests and benchmarks).
const char* isa_name();
// Forces an ISA ("avx512", "avx2", "generic"); throws qkv::Error if the CPU lacks it.
void set_isa(const std::string& name);
bool isa_supported(const std::string& name);

// What a GEMM does to each element of C once its sum is complete (after alpha and beta), while
// the tile is still in cache: the MLP's bias + GELU in the forward pass, and GELU's derivative
// in the backward, each of which was a pass of its own over a [tokens, 4C] matrix.
struct GemmEpilogue {
  enum class Kind {
    kBiasGelu,  // C[i][j] += bias[j] (bias may be null); act[i][j] = gelu(C[i][j]) (act may be
                // null: the bias alone); with grad, also grad[i][j] = gelu'(C[i][j]) (grad may
                // be C itself: the pre-activation is then replaced by the derivative)
    kGeluGrad,  // C[i][j] *= gelu'(pre[i][j])
    kMul,       // C[i][j] *= pre[i][j] (a derivative saved by kBiasGelu's grad)
  };
  Kind kind = Kind::kBiasGelu;
  const float* bias = nullptr;
  float* act = nullptr;
  int64_t ld_act = 0;
  float* grad = nullptr;
  int64_t ld_grad = 0;
  const float* pre = nullptr;
  int64_t ld_pre = 0;
};

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          const GemmEpilogue* ep = nullptr);
// The epilogue alone on C (M x N), as a pass of its own (the bf16 path; tests).
void gemm_epilogue(const GemmEpilogue& ep, float* C, int64_t ldc, int M, int N);

// Same contract as gemm, with the inputs rounded to bf16 and fp32 accumulation: AMX tiles where
// the CPU has them (and the kernel grants the tile permission), else AVX512-BF16 dot products
// (VDPBF16PS: AMD Zen 4/5, Intel Cooper Lake), else the fp32 kernel on the rounded inputs.
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
               const GemmEpilogue* ep = nullptr);
bool amx_available();
// Runs iters x 4 AMX bf16 tile products on resident tiles (this thread); returns the flops
// (0 without AMX).
double amx_probe(int64_t iters);
// Turns the AMX path off (or back on, if available): for tests of the fallback.
void set_amx(bool on);
// The AVX512-BF16 path (used when AMX is not): whether it is on, a peak probe like amx_probe
// (iters x 24 VDPBF16PS on registers; 0 when off), and a switch for tests.
bool avx512bf16_available();
double avx512bf16_probe(int64_t iters);
void set_avx512bf16(bool on);
// What gemm_bf16 runs on now: "AMX", "AVX512-BF16" or "fp32 FMA".
const char* bf16_engine();

// ---- weights packed for inference ----
// op(B) of a K x N product (a layer's weight), packed once for fast inference: panels of 16
// columns, each cut into chunks of 32 k (zero padded past K and N).
// BF16 keeps each weight rounded to bf16, k-major inside a chunk ([32 k][16 columns]).
// Q8 keeps int8 values with one scale per column per chunk of 32 k (the block of llama.cpp's
// q8_0), the scale stored as bf16 rounded up so that round(w / scale) never leaves [-127, 127].
// The values are stored offset by +128 (as unsigned bytes) in groups of 4 k per column
// ([8 k-quads][16 columns][4 k]): the layout of AVX512-VNNI's unsigned x signed byte dot products.
// Small M (decode) reads the packed weights directly, a GEMV bound by memory bandwidth; for Q8
// it quantises each row of A to int8 per chunk of 32 (scale max|a|/127, as q8_0) and sums exact
// integer products. Larger M (prefill) runs AMX when present: AMX-INT8 on the same bytes for Q8
// (the GEMV's arithmetic, so a row in a batch equals it alone, bit for bit), bf16 tiles for BF16
// (AVX512-BF16 dot products without AMX; both round the activations to bf16).
enum class WeightFormat { BF16, Q8 };
const char* weight_format_name(WeightFormat f);

struct PackedMatrix {
  WeightFormat format = WeightFormat::BF16;
  int K = 0, N = 0;
  int kchunks = 0, panels = 0;
  AlignedVector<uint16_t> bf16;   // BF16: panels * kchunks * 512
  AlignedVector<uint8_t> q8;      // Q8: panels * kchunks * 512, value + 128
  AlignedVector<uint16_t> scale;  // Q8: panels * kchunks * 16, bf16
  size_t bytes() const { return bf16.size() * 2 + q8.size() + scale.size() * 2; }
  // Offset of chunk (panel p, chunk c) in elements of bf16 / q8 (its scales: / 32).
  size_t tile(int p, int c) const { return (size_t(p) * size_t(kchunks) + size_t(c)) * 512; }
  // Element (k, column) of a chunk, k and column < 32 and 16.
  static size_t bf16_at(int k, int col) { return size_t(k) * 16 + size_t(col); }
  static size_t q8_at(int k, int col) {
    return size_t(k / 4) * 64 + size_t(col) * 4 + size_t(k % 4);
  }
};

// Packs op(B) (K x N; trans_b: B is stored N x K).
void pack_matrix(PackedMatrix& dst, WeightFormat f, const float* B, int64_t ldb, bool trans_b,
                 int K, int N);
// Packs int8 values and their bf16 scales given in the orientation of a stored tensor:
// trans_b false: q is K x N and scales ceil(K/32) x N; true: q is N x K, scales N x ceil(K/32).
void pack_q8(PackedMatrix& dst, const int8_t* q, const uint16_t* scales, bool trans_b, int K,
             int N);
// The reverse of pack_q8, for saving a Q8 matrix.
void unpack_q8(const PackedMatrix& src, int8_t* q, uint16_t* scales, bool trans_b);
// Column j of op(B), dequantized (K floats).
void packed_column(const PackedMatrix& B, int j, float* out);
// C (M x N, ldc) = A (M x K, lda) @ op(B), then the epilogue if given (decode, M <= 4: on each
// panel of 16 columns as it is finished, in the same parallel region).
void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc,
                 const GemmEpilogue* ep = nullptr);

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                     int Tt, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                      int Tt, int C);
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int C);
void bias_forward(float* out, const float* bias, int64_t N, int OC);
void bias_backward(float* dbias, const float* dout, int64_t N, int OC);
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void residual_forward(float* out, const float* a, const float* b, int64_t n);
// The residual add fused with the norm that reads the stream: res += add, then out = norm(res)
// (mean/rstd saved as by the norm), in one pass over the rows. Same bits as the two calls.
void residual_layernorm_forward(float* res, const float* add, float* out, float* mean, float* rstd,
                                const float* weight, const float* bias, int64_t N, int C,
                                float eps);
void residual_rmsnorm_forward(float* res, const float* add, float* out, float* rstd,
                              const float* weight, int64_t N, int C, float eps);
// RMSNorm (no centring, no bias) and ReLU; backward accumulates (+=) like the others.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int C, float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C);
void relu_forward(float* out, const float* inp, int64_t n);
void relu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
// SwiGLU over rows of [gate | up] (N, 2H) -> (N, H); backward accumulates (see ref.h).
void swiglu_forward(float* out, const float* inp, int64_t N, int H);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t N, int H);
// Rotary positions in place (see ref::rope_apply); cos/sin come from rope_table.
void rope_apply(float* x, int64_t rows, int T, int64_t pos0, int64_t stride, int heads, int HS,
                float theta, bool inverse);
// Fused, tiled attention with online softmax: never holds a Tq x Tk matrix.
void attention_forward(const AttnArgs<float>& a);
void attention_backward(const AttnArgs<float>& a);
// Frees the per-thread attention scratch (benchmarks: measure a call's own allocations).
void release_attention_scratch();
// The exact probabilities (Tq x Tk, row-major) of batch item b, head h, recomputed from q, k and
// the lse (Linear: normaliser) a forward pass saved in a.lse; invisible keys get 0.
void attention_probs(const AttnArgs<float>& a, int b, int h, float* out);
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int64_t N, int V);
void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int64_t N, int V);
// gscale multiplies every gradient first (gradient clipping fused into the update).
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float wd, float bc1, float bc2, float gscale = 1.0f);
// One tensor of a flat parameter buffer: elements [offset, offset + n) of p, g, m and v, with
// its weight decay.
struct AdamWSegment {
  int64_t offset;
  int64_t n;
  float wd;
};
// adamw_update for many tensors in one parallel region (the same bits as one call each).
void adamw_update_segments(float* p, const float* g, float* m, float* v, const AdamWSegment* segs,
                           int nseg, float lr, float beta1, float beta2, float eps, float bc1,
                           float bc2, float gscale = 1.0f);
// Sum of squares in double (for the global gradient norm).
double sum_squares(const float* x, int64_t n);
// x *= s.
void scale(float* x, int64_t n, float s);
// Runs iters x 8 independent vector FMAs in registers (single thread); returns the flops done.
double fma_probe(int64_t iters);

}  // namespace qkv::cpu
