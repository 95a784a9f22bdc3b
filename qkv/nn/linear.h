// Linear layer in Hugging Face Conv1D layout: weight stored (C, OC), so out = inp @ weight + bias.
#pragma once

#include <cstdint>

#include "qkv/backend/cpu/cpu.h"

namespace qkv::nn {

// Matmul precision: F32, or BF16 (inputs rounded to bf16, fp32 accumulation; AMX when present).
enum class Precision { F32, BF16 };

// The GEMM for a precision (same contract as cpu::gemm).
void matmul(Precision p, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc, const cpu::GemmEpilogue* ep = nullptr);

// inp (N,C) @ weight (C,OC) + bias (OC, may be null) -> out (N,OC).
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC, Precision p = Precision::F32);
// The MLP's first layer and its GELU in one pass over the output: pre (N,OC) = inp @ weight +
// bias, act = gelu(pre); the same values as linear_forward then gelu_forward. With grad (N,OC),
// also grad = gelu'(pre), for linear_backward's act_grad; grad may be pre itself (training keeps
// the derivative instead of the pre-activation: the backward pass then only multiplies).
void linear_gelu_forward(float* pre, float* act, const float* inp, const float* weight,
                         const float* bias, int64_t N, int C, int OC, Precision p = Precision::F32,
                         float* grad = nullptr);
// dinp (N,C) = dout @ weight^T (written when accumulate_dinp is false, else added);
// dweight (C,OC) += inp^T @ dout; dbias (OC) += column sums of dout (if non-null).
// With act_grad (N,C), the layer's input was an activation act(pre) whose derivative act'(pre)
// is act_grad (as linear_gelu_forward saves it), and dinp is the gradient of pre instead:
// (dout @ weight^T) * act_grad, written (accumulate_dinp must be false).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC, bool accumulate_dinp = false,
                     Precision p = Precision::F32, const float* act_grad = nullptr);

}  // namespace qkv::nn
