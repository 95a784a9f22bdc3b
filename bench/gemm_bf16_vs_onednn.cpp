// qkv's bf16 GEMM beside oneDNN's (Debian's libdnnl), alternating in one run, on the machine's
// bf16 engine: AMX tiles where present (oneDNN's brgemm AMX kernels), else AVX512-BF16 dot
// products (VDPBF16PS; oneDNN's avx512_core_bf16 kernels), with the share of that engine's peak
// that qkv bench gemm measures (tile products on resident tiles, or 24 chains of VDPBF16PS on
// registers). Rows:
//   qkv gemm_bf16      fp32 A and B in, rounded to bf16 while packing (the training contract)
//   oneDNN plain       bf16 A and B in row-major memory (its matmul on plain layouts)
//   qkv packed         fp32 A, B a packed bf16 inference weight (cpu::gemm_packed, prefill)
//   oneDNN prepacked   bf16 A, B reordered once into oneDNN's blocked layout (format any)
// Prints a Markdown table of GFLOP/s medians. Built only when libdnnl-dev is installed.
//   build/bench/gemm_bf16_vs_onednn [threads]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dnnl.hpp>
#include <functional>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/aligned.h"
#include "qkv/core/dtype.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"

namespace {

using Clock = std::chrono::steady_clock;

double median_gflops(double flops, int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int r = -2; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    if (r >= 0) t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return flops / t[t.size() / 2] / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  qkv::set_num_threads(threads);
  const bool amx = qkv::cpu::amx_available();
  if (!amx && !qkv::cpu::avx512bf16_available()) {
    std::fprintf(stderr, "gemm_bf16_vs_onednn: this machine has neither AMX nor AVX512-BF16\n");
    return 1;
  }
  double peak = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    double flops = 0;
#pragma omp parallel reduction(+ : flops)
    flops +=
        amx ? qkv::cpu::amx_probe(int64_t(1) << 18) : qkv::cpu::avx512bf16_probe(int64_t(5) << 20);
    peak = std::max(peak, flops / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
  }
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  struct Shape {
    int M, N, K;
  };
  const Shape shapes[] = {{1024, 2304, 768},
                          {1024, 3072, 768},
                          {2048, 2048, 2048},
                          {4096, 4096, 1024},
                          {128, 2304, 768}};
  std::printf(
      "| M x N x K | qkv gemm_bf16 (fp32 in) | oneDNN plain (bf16 in) | qkv packed weight | "
      "oneDNN prepacked weight |\n|---|---|---|---|---|\n");
  auto cell = [&](double g) {
    static char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f (%.0f%%)", g, 100 * g / peak);
    return std::string(buf);
  };
  for (const Shape& s : shapes) {
    const int M = s.M, N = s.N, K = s.K;
    const double flops = 2.0 * M * N * K;
    const int reps = flops > 2e10 ? 5 : 11;
    qkv::Rng rng(1, 0);
    // 64-byte aligned, as qkv's own buffers and as oneDNN allocates its memory objects: a
    // malloc'd C (16 bytes off a line) splits every tile row store across two lines.
    std::vector<float, qkv::AlignedAlloc<float>> A(size_t(M) * K), B(size_t(K) * N),
        C(size_t(M) * N);
    for (auto& x : A) x = rng.uniform() - 0.5f;
    for (auto& x : B) x = rng.uniform() - 0.5f;
    // oneDNN's operands: the same values in bf16.
    dnnl::memory::desc a_md({M, K}, dt::bf16, tag::ab), b_md({K, N}, dt::bf16, tag::ab),
        c_md({M, N}, dt::f32, tag::ab), b_any({K, N}, dt::bf16, tag::any);
    dnnl::memory a_mem(a_md, eng), b_mem(b_md, eng), c_mem(c_md, eng);
    auto* ab = static_cast<uint16_t*>(a_mem.get_data_handle());
    auto* bb = static_cast<uint16_t*>(b_mem.get_data_handle());
    for (size_t i = 0; i < A.size(); ++i) ab[i] = qkv::f32_to_bf16(A[i]);
    for (size_t i = 0; i < B.size(); ++i) bb[i] = qkv::f32_to_bf16(B[i]);
    dnnl::matmul plain(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), eng));
    dnnl::matmul::primitive_desc packed_pd(dnnl::matmul::desc(a_md, b_any, c_md), eng);
    dnnl::matmul packed(packed_pd);
    dnnl::memory b_packed(packed_pd.weights_desc(), eng);
    dnnl::reorder(b_mem, b_packed).execute(strm, b_mem, b_packed);
    strm.wait();
    qkv::cpu::PackedMatrix pw;
    qkv::cpu::pack_matrix(pw, qkv::cpu::WeightFormat::BF16, B.data(), N, false, K, N);
    // Alternate the four, round by round, and keep each one's median.
    std::vector<double> g[4];
    for (int round = 0; round < 3; ++round) {
      g[0].push_back(median_gflops(flops, reps, [&] {
        qkv::cpu::gemm_bf16(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(),
                            N);
      }));
      g[1].push_back(median_gflops(flops, reps, [&] {
        plain.execute(strm,
                      {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
        strm.wait();
      }));
      g[2].push_back(median_gflops(
          flops, reps, [&] { qkv::cpu::gemm_packed(M, A.data(), K, pw, C.data(), N); }));
      g[3].push_back(median_gflops(flops, reps, [&] {
        packed.execute(
            strm, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_packed}, {DNNL_ARG_DST, c_mem}});
        strm.wait();
      }));
    }
    for (auto& v : g) std::sort(v.begin(), v.end());
    std::printf("| %d x %d x %d | %s | %s | %s | %s |\n", M, N, K, cell(g[0][1]).c_str(),
                cell(g[1][1]).c_str(), cell(g[2][1]).c_str(), cell(g[3][1]).c_str());
  }
  std::printf(
      "\nGFLOP/s (share of the %.0f GFLOP/s %s bf16 peak), median of 3 rounds; %d threads\n", peak,
      qkv::cpu::bf16_engine(), threads);
  return 0;
}
