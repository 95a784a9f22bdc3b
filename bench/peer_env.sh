# Sourced by the benchmark scripts that run a BLAS-backed peer (PyTorch on OpenBLAS).
# Debian 12's OpenBLAS (0.3.21) predates AMD Zen 4/5: left to itself it does not recognise
# them, and these machines' environment sets OPENBLAS_CORETYPE=Haswell (its AVX2 kernels). Its
# AVX-512 (SkylakeX) sgemm runs 1.8x faster there (355-381 against 190-210 GFLOP/s at GPT-2's
# shapes on a Zen 5, build/bench/gemm_vs_openblas). Peers are measured at their best, so on a
# CPU with AVX-512 an AVX2 core type (or none) becomes SkylakeX. Any other choice is kept.
case "${OPENBLAS_CORETYPE:-}" in
  "" | Haswell | Zen)
    if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
    ;;
esac
