// The dtype combinations of pid::qk_norm_rope and pid::attention (pid/attention.h), in one place for the CPU and
// the CUDA kernels: f is called with the element types of a supported combination; any other combination throws
// std::invalid_argument. Bf16 as for with_dtypes (dtype_switch.h).
#pragma once

#include "dtype_switch.h"
#include "pid/attention.h"

namespace pid {

// f(In{}, Wt{}, Out{}): the types of qkv, of the two weights and of the two outputs; float32 or bfloat16 each.
template <typename Bf16, typename F>
decltype(auto) with_qk_norm_rope_dtypes(const char* fn, const QkNormRopeParams& p, F&& f) {
  return with_dtypes<Bf16>(fn, {p.qkv_dtype, p.weight_dtype, p.out_dtype}, f);
}

// f(T{}): the type of q, k, v and o, float32 or bfloat16.
template <typename Bf16, typename F>
decltype(auto) with_attention_dtypes(const char* fn, const AttentionParams& p, F&& f) {
  return with_dtype<Bf16>(fn, p.dtype, f);
}

}  // namespace pid
