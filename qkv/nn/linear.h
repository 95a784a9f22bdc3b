// Linear layer in Hugging Face Conv1D layout: weight stored (C, OC), so out = inp @ weight + bias.
#pragma once

#include <cstdint>

namespace qkv::nn {

// inp (N,C) @ weight (C,OC) + bias (OC, may be null) -> out (N,OC).
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC);
// dinp (N,C) = dout @ weight^T (written when accumulate_dinp is false, else added);
// dweight (C,OC) += inp^T @ dout; dbias (OC) += column sums of dout (if non-null).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC, bool accumulate_dinp = false);

}  // namespace qkv::nn
