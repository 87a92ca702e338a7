// Element loads and stores shared by the CPU kernels: float32 math on float32 or bfloat16 memory (the CPU
// counterpart of csrc/kernels/cuda/load_store.cuh). A bfloat16 store rounds to nearest even, NaN to the
// canonical quiet NaN: the bits of pid::float_to_bf16, computed without a branch so that the loops around
// it vectorise.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

#include "pid/bf16.h"

// Each CPU kernel source is compiled once per instruction-set variant (CMakeLists.txt: cpu_baseline, cpu_avx2,
// cpu_avx512 or cpu_native), with PID_CPU_NS naming its namespace. These helpers live in it too: an inline
// function shared by name across the variants would be one symbol at link time, possibly the AVX-512 copy.
#ifndef PID_CPU_NS
#error "PID_CPU_NS is not defined: the CPU kernels are built per variant by CMakeLists.txt (pid_cpu_variant)"
#endif

namespace pid::PID_CPU_NS {

inline float ld(const float* p) { return *p; }
inline float ld(const bf16* p) { return bf16_to_float(*p); }

// f rounded to the nearest bfloat16, as a float32.
inline float round_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return std::bit_cast<float>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : r);
}

// The value a float32 v has once stored as T (float or bf16): PyTorch's v.to(T), as a float32.
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return round_bf16(v);
  else
    return v;
}

inline void st(float* p, float v) { *p = v; }
inline void st(bf16* p, float v) {
  p->bits = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(round_bf16(v)) >> 16);
}

}  // namespace pid::PID_CPU_NS
