// Element-type tags of the torch-free C++ API, and the one convention that every header in csrc/include/pid/
// follows:
//
// Calls: a kernel family takes one params struct, plain data as in FlashAttention's C++ API (pointers, sizes,
// strides and dtype tags: pid::AttentionParams, pid::QkNormRopeParams, pid::NormModulateParams, ...):
//   void name_cpu(const NameParams& p);                synchronous
//   int name_cuda(const NameParams& p, void* stream);  every pointer in device memory; asynchronous on the
//                                                      cudaStream_t `stream`; returns the cudaError_t of the
//                                                      launch (0 = cudaSuccess)
// Dtypes: an operand that may be float32 or bfloat16 is a `const void*` (an output: `void*`) with a DType tag;
// operands that must share a dtype share one tag (AttentionParams::dtype is q's, k's, v's and o's). An operand
// that is always float32 is a `const float*` (`float*`). bfloat16 data is raw bits, pid::bf16 (pid/bf16.h: the
// layout of c10::BFloat16 and __nv_bfloat16); dtype_of<T>() is the tag of float or bf16. The comment above each
// params struct says which dtype combinations it takes; the CPU and the CUDA function take the same ones.
// Errors: a tag that is no DType, a combination of tags that the kernel does not take, or another argument it
// does not take (CUDA attention: a head_dim other than 64 or 72) makes the CPU and the CUDA function alike throw
// std::invalid_argument, before any work or launch (a call with nothing to compute may return before it looks).
// Sizes, strides and pointers are not checked: the torch ops check their tensors (csrc/torch/*_check.h) before
// they call this API.
#pragma once

#include <cstdint>
#include <type_traits>

#include "pid/bf16.h"

namespace pid {

// Element type of a type-erased operand.
enum class DType : std::uint8_t { kFloat32 = 0, kBFloat16 = 1 };

inline const char* dtype_name(DType t) {
  return t == DType::kFloat32 ? "float32" : t == DType::kBFloat16 ? "bfloat16" : "unknown DType";
}

// The tag of a C++ element type: dtype_of<float>() is kFloat32, dtype_of<bf16>() is kBFloat16.
template <typename T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "pid kernels take float or pid::bf16 data");
  return std::is_same_v<T, float> ? DType::kFloat32 : DType::kBFloat16;
}

}  // namespace pid
