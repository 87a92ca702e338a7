// Element types shared by the torch-free kernel APIs: bfloat16 as raw bits, its conversions, and a
// run-time type tag for kernels that take type-erased operands.
#pragma once

#include <cstdint>
#include <cstring>

namespace pid {

// bfloat16 as its raw bits; same layout as c10::BFloat16 and __nv_bfloat16.
struct bf16 {
  std::uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 must be 2 bytes");

inline float bf16_to_float(bf16 v) {
  const std::uint32_t u = std::uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even; NaN -> 0x7fc0 (what c10::BFloat16 does).
inline bf16 float_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{0x7fc0};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}

// Element type of a type-erased operand.
enum class DType : std::uint8_t { kFloat32 = 0, kBFloat16 = 1 };

inline const char* dtype_name(DType t) { return t == DType::kFloat32 ? "float32" : "bfloat16"; }

}  // namespace pid
