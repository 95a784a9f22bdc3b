// The table of CPU kernels one instruction-set build provides (internal to the CPU backend).
#pragma once

#include <cstdint>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/kernel_args.h"
#include "qkv/core/aligned.h"

namespace qkv::cpu {

// Rows of A quantised for int8 products: per chunk of 32 values, q = round(a * (1 / s)) with
// s = max|a| / 127, and the chunk's sum of q (the +128 offset of packed int8 weights adds
// 128 * sum to every integer dot product). One implementation (packed.cpp) for every kernel, so
// the decode GEMV and the AMX prefill see the same integers.
struct QuantRows {
  const int8_t* q;     // rows x kp, zero padded
  const float* scale;  // rows x kchunks
  const float* sum;    // rows x kchunks (exact integers)
  int kp, kchunks;
};
// Quantises M rows (K values each) into the calling thread's buffers (valid until its next call).
QuantRows quantize_rows_q8(int M, const float* A, int64_t lda, int K, int kchunks,
                           int pad_rows = 0);

struct IsaTable {
  void (*gemm)(bool, bool, int, int, int, float, const float*, int64_t, const float*, int64_t,
               float, float*, int64_t, const GemmEpilogue*);
  void (*gemm_epilogue)(const GemmEpilogue&, float*, int64_t, int, int);
  void (*encoder_forward)(float*, const int32_t*, const float*, const float*, int, int, int);
  void (*encoder_backward)(float*, float*, const float*, const int32_t*, int, int, int);
  void (*layernorm_forward)(float*, float*, float*, const float*, const float*, const float*,
                            int64_t, int, float);
  void (*residual_layernorm_forward)(float*, const float*, float*, float*, float*, const float*,
                                     const float*, int64_t, int, float);
  void (*layernorm_backward)(float*, float*, float*, const float*, const float*, const float*,
                             const float*, const float*, int64_t, int);
  void (*bias_forward)(float*, const float*, int64_t, int);
  void (*bias_backward)(float*, const float*, int64_t, int);
  void (*gelu_forward)(float*, const float*, int64_t);
  void (*gelu_backward)(float*, const float*, const float*, int64_t);
  void (*residual_forward)(float*, const float*, const float*, int64_t);
  void (*attention_forward)(const AttnArgs<float>&);
  void (*attention_backward)(const AttnArgs<float>&);
  void (*release_attention_scratch)();
  void (*attention_probs)(const AttnArgs<float>&, int, int, float*);
  void (*rmsnorm_forward)(float*, float*, const float*, const float*, int64_t, int, float);
  void (*residual_rmsnorm_forward)(float*, const float*, float*, float*, const float*, int64_t, int,
                                   float);
  void (*rmsnorm_backward)(float*, float*, const float*, const float*, const float*, const float*,
                           int64_t, int);
  void (*relu_forward)(float*, const float*, int64_t);
  void (*relu_backward)(float*, const float*, const float*, int64_t);
  void (*swiglu_forward)(float*, const float*, int64_t, int);
  void (*swiglu_backward)(float*, const float*, const float*, int64_t, int);
  void (*crossentropy_forward)(float*, float*, const float*, const int32_t*, int64_t, int);
  void (*crossentropy_backward)(float*, const float*, const float*, const int32_t*, const float*,
                                int64_t, int);
  void (*adamw_update)(float*, const float*, float*, float*, int64_t, float, float, float, float,
                       float, float, float, float);
  void (*adamw_update_segments)(float*, const float*, float*, float*, const AdamWSegment*, int,
                                float, float, float, float, float, float, float);
  double (*sum_squares)(const float*, int64_t);
  void (*scale)(float*, int64_t, float);
  double (*fma_probe)(int64_t);
  // C (M x N) = A @ packed B for M <= 4, reading the packed weights once; then the epilogue
  // (may be null) on each finished panel.
  void (*gemv_packed)(int, const float*, int64_t, const PackedMatrix&, float*, int64_t,
                      const GemmEpilogue*);
};

namespace avx512 {
extern const IsaTable kTable;
}
namespace avx2 {
extern const IsaTable kTable;
}
namespace generic {
extern const IsaTable kTable;
}

}  // namespace qkv::cpu
