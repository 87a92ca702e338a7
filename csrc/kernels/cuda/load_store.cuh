// Element loads and stores shared by the CUDA kernels: float32 math on float32 or bfloat16 memory
// (bfloat16 stores round to nearest even).
#pragma once

#include <cuda_bf16.h>

namespace pid {

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

}  // namespace pid
