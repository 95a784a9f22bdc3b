// The CPU kernels built for generic (see kernels_isa.inc; compile flags set in CMakeLists.txt).
#define QKV_ISA_NS generic
#define QKV_VW 4
#include "qkv/backend/cpu/kernels_isa.inc"
