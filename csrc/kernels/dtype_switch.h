// From run-time DType tags to template instantiations, for the CPU and the CUDA kernels alike, and how a
// kernel reports a tag or a combination of tags it does not support: std::invalid_argument (pid/dtype.h). Each
// kernel family states the combinations it takes once, for its CPU and CUDA kernels, in <family>_dtypes.h.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "pid/dtype.h"

namespace pid {

// Throws std::invalid_argument("<fn>: <what>"), fn being the API function (e.g. "pid::attention_cpu").
[[noreturn]] inline void throw_unsupported(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

// Returns f(T{}) for the element type T that tag t names: float for kFloat32, Bf16 for kBFloat16 (pid::bf16 in
// the CPU kernels; __nv_bfloat16, or std::uint16_t for raw bits, in the CUDA ones). Throws for any other value.
template <typename Bf16, typename F>
decltype(auto) with_dtype(const char* fn, DType t, F&& f) {
  if (t == DType::kFloat32) return f(float{});
  if (t == DType::kBFloat16) return f(Bf16{});
  throw_unsupported(fn, "unknown DType value " + std::to_string(static_cast<int>(t)));
}

// Several tags at once: with_dtypes<Bf16>(fn, {t1, t2, t3}, f) returns f(T1{}, T2{}, T3{}), one instantiation of
// f per combination. A combination the kernel does not support is the caller's to reject inside f, with
// `if constexpr` (so that it is never instantiated) and throw_unsupported.
template <typename Bf16, std::size_t N, typename F, typename... Types>
decltype(auto) with_dtypes(const char* fn, const DType (&tags)[N], F&& f, Types... types) {
  if constexpr (sizeof...(Types) == N)
    return f(types...);
  else
    return with_dtype<Bf16>(fn, tags[sizeof...(Types)],
                            [&](auto t) -> decltype(auto) { return with_dtypes<Bf16>(fn, tags, f, types..., t); });
}

}  // namespace pid
