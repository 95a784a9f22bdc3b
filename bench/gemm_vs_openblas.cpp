// qkv's fp32 GEMM beside OpenBLAS's sgemm (Debian's libopenblas), at GPT-2 124M training shapes,
// in alternating phases of one run. Prints a Markdown table of medians and their ratio.
// With "baby", the shapes of nanoGPT's baby GPT step instead (B*T = 768, C = 128, vocab 65),
// where each product is small and packing and threading overheads, not the FMA rate, decide.
//   build/bench/gemm_vs_openblas [threads] [gpt2|baby]
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* what;
  int M, N, K;
  bool ta, tb;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS picks its kernels when it loads, from OPENBLAS_CORETYPE or the CPU. Debian's 0.3.21
  // does not know AMD Zen 4/5 (these machines' environment sets Haswell, its AVX2 kernels),
  // and its AVX-512 (SkylakeX) kernels run 1.8x faster there: on a CPU with AVX-512 and an AVX2
  // core type (or none), run again with SkylakeX, so the peer is measured at its best
  // (bench/peer_env.sh does the same for the scripts).
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  const std::string ct = core ? core : "";
  if ((ct.empty() || ct == "Haswell" || ct == "Zen") && __builtin_cpu_supports("avx512f")) {
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);
    std::perror("gemm_vs_openblas: re-exec with OPENBLAS_CORETYPE=SkylakeX");
    return 1;
  }
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  qkv::set_num_threads(threads);
  openblas_set_num_threads(threads);
  // B*T = 1024 tokens (B=4, T=256), C = 768, vocab 50257.
  const bool baby = argc > 2 && std::string(argv[2]) == "baby";
  const std::vector<Shape> gpt2_shapes = {
      {"qkv proj fwd", 1024, 2304, 768, false, false},
      {"mlp up fwd", 1024, 3072, 768, false, false},
      {"mlp down fwd", 1024, 768, 3072, false, false},
      {"mlp down dinp", 1024, 3072, 768, false, true},
      {"mlp down dW", 3072, 768, 1024, true, false},
      {"lm head fwd", 1024, 50257, 768, false, true},
      {"lm head dW", 50257, 768, 1024, true, false},
      {"prefill qkv (128)", 128, 2304, 768, false, false},
  };
  // One layer's forward, input gradient and weight gradient, then the tied LM head.
  const std::vector<Shape> baby_shapes = {
      {"qkv proj fwd", 768, 384, 128, false, false}, {"attn out fwd", 768, 128, 128, false, false},
      {"mlp up fwd", 768, 512, 128, false, false},   {"mlp down fwd", 768, 128, 512, false, false},
      {"qkv proj dinp", 768, 128, 384, false, true}, {"mlp up dinp", 768, 128, 512, false, true},
      {"mlp down dinp", 768, 512, 128, false, true}, {"qkv proj dW", 128, 384, 768, true, false},
      {"mlp up dW", 128, 512, 768, true, false},     {"mlp down dW", 512, 128, 768, true, false},
      {"lm head fwd", 768, 65, 128, false, true},    {"lm head dinp", 768, 128, 65, false, false},
      {"lm head dW", 65, 128, 768, true, false},
  };
  const std::vector<Shape>& shapes = baby ? baby_shapes : gpt2_shapes;
  double total_q = 0, total_o = 0;
  std::printf(
      "| shape | M x N x K | qkv GFLOP/s | OpenBLAS GFLOP/s | qkv / OpenBLAS "
      "|\n|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    qkv::Rng rng(1, 0);
    std::vector<float> A(size_t(s.M) * s.K), B(size_t(s.K) * s.N), C(size_t(s.M) * s.N);
    for (auto& x : A) x = rng.uniform() - 0.5f;
    for (auto& x : B) x = rng.uniform() - 0.5f;
    const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    std::vector<double> tq, to;
    // Phases, not call-by-call alternation: OpenBLAS (Debian's pthread build) leaves its worker
    // threads spinning for a while after each call, and GOMP's do the same, so a call right
    // after the other library's ran on part of a core (whole shapes at half speed, either side).
    // Each phase starts after a pause that outlasts both spins; the phases alternate.
    const int reps = s.M * double(s.N) * s.K > 1e10 ? 2 : s.M * double(s.N) * s.K < 1e9 ? 34 : 4;
    auto phase = [&](std::vector<double>& out, auto&& call) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      for (int r = -1; r < reps; ++r) {
        auto t0 = Clock::now();
        call();
        if (r >= 0) out.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
    };
    for (int round = 0; round < 3; ++round) {
      phase(tq, [&] {
        qkv::cpu::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f,
                       C.data(), s.N);
      });
      phase(to, [&] {
        cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans,
                    s.tb ? CblasTrans : CblasNoTrans, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(),
                    ldb, 0.0f, C.data(), s.N);
      });
    }
    const double flops = 2.0 * s.M * s.N * s.K;
    const double gq = flops / median(tq) / 1e9, go = flops / median(to) / 1e9;
    std::printf("| %s | %d x %d x %d | %.0f | %.0f | %.2f |\n", s.what, s.M, s.N, s.K, gq, go,
                gq / go);
    total_q += median(tq);
    total_o += median(to);
  }
  std::printf("| all of the above (sum of medians) | | %.3f ms | %.3f ms | %.2f |\n", total_q * 1e3,
              total_o * 1e3, total_o / total_q);
  std::printf("\n%d threads, qkv kernels: %s, OPENBLAS_CORETYPE=%s\n", threads,
              qkv::cpu::isa_name(),
              std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(detected)");
  return 0;
}
