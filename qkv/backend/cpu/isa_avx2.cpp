// The CPU kernels built for avx2 (see kernels_isa.inc; compile flags set in CMakeLists.txt).
#define QKV_ISA_NS avx2
#define QKV_VW 8
#include "qkv/backend/cpu/kernels_isa.inc"
