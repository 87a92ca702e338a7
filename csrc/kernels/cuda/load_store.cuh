// Element loads and stores shared by the CUDA kernels: float32 math on float32 or bfloat16 memory
// (bfloat16 stores round to nearest even).
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

namespace pid {

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// The value a float32 v has once stored as T (float or __nv_bfloat16), as a float32.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(__float2bfloat16_rn(v));
  else
    return v;
}

}  // namespace pid
