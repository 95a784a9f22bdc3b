#include "qkv/nn/linear.h"

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"

namespace qkv::nn {

void matmul(Precision p, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
            const cpu::GemmEpilogue* ep) {
  if (p == Precision::BF16)
    cpu::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
  else
    cpu::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC, Precision p) {
  matmul(p, false, false, int(N), OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
  if (bias) cpu::bias_forward(out, bias, N, OC);
}

void linear_gelu_forward(float* pre, float* act, const float* inp, const float* weight,
                         const float* bias, int64_t N, int C, int OC, Precision p, float* grad) {
  cpu::GemmEpilogue ep;
  ep.kind = cpu::GemmEpilogue::Kind::kBiasGelu;
  ep.bias = bias;
  ep.act = act;
  ep.ld_act = OC;
  ep.grad = grad;
  ep.ld_grad = OC;
  matmul(p, false, false, int(N), OC, C, 1.0f, inp, C, weight, OC, 0.0f, pre, OC, &ep);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC, bool accumulate_dinp,
                     Precision p, const float* act_grad) {
  QKV_ASSERT(!(act_grad && accumulate_dinp));  // an activation's gradient is written, not added
  cpu::GemmEpilogue ep;
  ep.kind = cpu::GemmEpilogue::Kind::kMul;
  ep.pre = act_grad;
  ep.ld_pre = C;
  matmul(p, false, true, int(N), C, OC, 1.0f, dout, OC, weight, OC, accumulate_dinp ? 1.0f : 0.0f,
         dinp, C, act_grad ? &ep : nullptr);
  matmul(p, true, false, C, OC, int(N), 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias) cpu::bias_backward(dbias, dout, N, OC);
}

}  // namespace qkv::nn
