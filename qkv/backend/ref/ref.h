// The reference backend: plain scalar loops, written for clarity, accumulating in double.
// It is the oracle the tests compare every fast kernel against, and it is instantiated for
// double too, so gradients can be checked against finite differences in double precision.
// Convention (all backends): backward kernels accumulate (+=) into their gradient outputs,
// except crossentropy_backward, which writes (and may run in place on the logits).
#pragma once

#include <cstdint>

#include "qkv/backend/kernel_args.h"

namespace qkv::ref {

// Row-major C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C. With beta == 0, C is
// not read. op(X) = X or X^T; lda/ldb/ldc are the row strides of the stored matrices.
template <typename T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// out (B,T,C) = wte[inp] + wpe[t]; inp (B,T) ids.
template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tt, int C);
template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tt, int C);

// inp (N,C) -> out (N,C); mean, rstd (N). bias may be null.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int C, float eps);
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int C);

// RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight (no centring, no bias); rstd (N).
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t N, int C, float eps);
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t N, int C);

// ReLU: out = max(x, 0); dinp += (x > 0) dout.
template <typename T>
void relu_forward(T* out, const T* inp, int64_t n);
template <typename T>
void relu_backward(T* dinp, const T* inp, const T* dout, int64_t n);

// SwiGLU (Shazeer 2020): inp (N, 2H) holds [gate | up] per row; out (N, H) = silu(gate) * up
// with silu(g) = g sigmoid(g). dinp (N, 2H) += the gradients of gate and up.
template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t N, int H);
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t N, int H);

// Rotary position embedding (RoFormer), rotate-half pairing (GPT-NeoX, LLaMA): in each head of
// HS channels, channel i < HS/2 pairs with i + HS/2 and the pair turns by angle
// pos * theta^(-2i/HS). x holds `rows` rows (row stride `stride`) of `heads` heads from channel
// 0; row r sits at position pos0 + r % T. inverse turns back (the backward pass: the transpose).
template <typename T>
void rope_apply(T* x, int64_t rows, int T_, int64_t pos0, int64_t stride, int heads, int HS,
                float theta, bool inverse);

// out (N,OC) += bias (OC) broadcast over rows; dbias (OC) += column sums of dout (N,OC).
template <typename T>
void bias_forward(T* out, const T* bias, int64_t N, int OC);
template <typename T>
void bias_backward(T* dbias, const T* dout, int64_t N, int OC);

// GELU, tanh form (HF "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n);
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n);

// out = a + b, elementwise.
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n);

template <typename T>
void attention_forward(const AttnArgs<T>& a);
template <typename T>
void attention_backward(const AttnArgs<T>& a);  // needs a.lse from the forward

// logits (N,V), targets (N) -> losses (N) = lse - logit[target], lse (N). target < 0: loss 0.
template <typename T>
void crossentropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t N,
                          int V);
// dlogits (N,V) = (softmax(logits) - onehot(target)) * dlosses[i]; rows with target < 0 get 0.
template <typename T>
void crossentropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* targets,
                           const T* dlosses, int64_t N, int V);

// One AdamW step (PyTorch's formula, decoupled weight decay):
//   p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), with bc = 1 - beta^step.
// gscale multiplies every gradient first (gradient clipping fused into the update).
template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float wd, float bc1, float bc2, float gscale = 1.0f);

}  // namespace qkv::ref
