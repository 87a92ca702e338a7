// Run-time element-type tag for kernels that take type-erased operands (float32 or bfloat16).
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
