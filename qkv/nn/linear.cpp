#include "qkv/nn/linear.h"

#include "qkv/backend/cpu/cpu.h"

namespace qkv::nn {

void matmul(Precision p, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (p == Precision::BF16)
    cpu::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    cpu::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC, Precision p) {
  matmul(p, false, false, int(N), OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
  if (bias) cpu::bias_forward(out, bias, N, OC);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC, bool accumulate_dinp,
                     Precision p) {
  matmul(p, false, true, int(N), C, OC, 1.0f, dout, OC, weight, OC, accumulate_dinp ? 1.0f : 0.0f,
         dinp, C);
  matmul(p, true, false, C, OC, int(N), 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias) cpu::bias_backward(dbias, dout, N, OC);
}

}  // namespace qkv::nn
