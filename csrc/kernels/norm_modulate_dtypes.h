// The dtype combinations of pid::rms_norm_modulate and pid::gated_residual (pid/norm_modulate.h), in one place for
// the CPU and the CUDA kernels: f is called with the element types of a supported combination; any other
// combination throws std::invalid_argument. Bf16 as for with_dtypes (dtype_switch.h).
#pragma once

#include <string>

#include "dtype_switch.h"
#include "pid/norm_modulate.h"

namespace pid {

// shift and scale must share a dtype. The kernels check this first, before they return early from a call with
// nothing to compute, so a mismatch is an error whatever the sizes.
inline void check_norm_modulate_dtypes(const char* fn, const NormModulateParams& p) {
  if (p.shift.dtype != p.scale.dtype)
    throw_unsupported(fn, std::string("shift and scale must share a dtype, got ") + dtype_name(p.shift.dtype) +
                              " and " + dtype_name(p.scale.dtype));
}

// f(TX{}, TM{}, TO{}): TX the type of x, TM that of shift and scale, TO that of out; float32 or bfloat16 each.
template <typename Bf16, typename F>
decltype(auto) with_norm_modulate_dtypes(const char* fn, const NormModulateParams& p, F&& f) {
  check_norm_modulate_dtypes(fn, p);
  return with_dtypes<Bf16>(fn, {p.x.dtype, p.scale.dtype, p.out_dtype}, f);
}

// f(TX{}, TG{}, TY{}, TO{}): the types of x, gate, y and out; float32 or bfloat16 each.
template <typename Bf16, typename F>
decltype(auto) with_gated_residual_dtypes(const char* fn, const GatedResidualParams& p, F&& f) {
  return with_dtypes<Bf16>(fn, {p.x.dtype, p.gate.dtype, p.y.dtype, p.out_dtype}, f);
}

}  // namespace pid
