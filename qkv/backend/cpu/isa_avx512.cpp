// The CPU kernels built for avx512 (see kernels_isa.inc; compile flags set in CMakeLists.txt).
#define QKV_ISA_NS avx512
#define QKV_VW 16
#include "qkv/backend/cpu/kernels_isa.inc"
