// Run-time element-type tag for kernels that take type-erased operands (float32 or bfloat16).
#pragma once

#include <cstdint>

#include "pid/bf16.h"

namespace pid {

// Element type of a type-erased operand.
enum class DType : std::uint8_t { kFloat32 = 0, kBFloat16 = 1 };

inline const char* dtype_name(DType t) { return t == DType::kFloat32 ? "float32" : "bfloat16"; }

}  // namespace pid
