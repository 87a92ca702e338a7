// The torch dtypes the kernels take (float32 and bfloat16) and their pid::DType tags, for every binding.
#pragma once

#include <c10/core/ScalarType.h>

#include "pid/dtype.h"

namespace pid {

inline bool is_kernel_dtype(c10::ScalarType t) { return t == c10::kFloat || t == c10::kBFloat16; }

// The tag of a dtype that is_kernel_dtype accepts (the caller has checked it).
inline DType kernel_dtype(c10::ScalarType t) { return t == c10::kFloat ? DType::kFloat32 : DType::kBFloat16; }

}  // namespace pid
