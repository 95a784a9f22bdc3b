#include "qkv/nn/linear.h"

#include "qkv/backend/cpu/cpu.h"

namespace qkv::nn {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC) {
  cpu::gemm(false, false, int(N), OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
  if (bias) cpu::bias_forward(out, bias, N, OC);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC, bool accumulate_dinp) {
  cpu::gemm(false, true, int(N), C, OC, 1.0f, dout, OC, weight, OC, accumulate_dinp ? 1.0f : 0.0f,
            dinp, C);
  cpu::gemm(true, false, C, OC, int(N), 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias) cpu::bias_backward(dbias, dout, N, OC);
}

}  // namespace qkv::nn
