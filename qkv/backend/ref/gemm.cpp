// Reference GEMM: triple loop, double accumulation.
#include "qkv/backend/ref/ref.h"

namespace qkv::ref {

template <typename T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double acc = 0;
      for (int k = 0; k < K; ++k) {
        double a = trans_a ? A[int64_t(k) * lda + i] : A[int64_t(i) * lda + k];
        double b = trans_b ? B[int64_t(j) * ldb + k] : B[int64_t(k) * ldb + j];
        acc += a * b;
      }
      T* c = &C[int64_t(i) * ldc + j];
      *c = beta == T(0) ? T(alpha * acc) : T(alpha * acc + double(beta) * double(*c));
    }
  }
}

template void gemm<float>(bool, bool, int, int, int, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int, int, int, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

}  // namespace qkv::ref
