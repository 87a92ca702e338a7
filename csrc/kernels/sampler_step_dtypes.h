// The dtype combinations of pid::student_step and pid::dpm_step (pid/sampler_step.h), in one place for the CPU and
// the CUDA kernels: f is called with the element type of the velocities; any other tag throws
// std::invalid_argument. Every other operand is float32. Bf16 as for with_dtypes (dtype_switch.h).
#pragma once

#include "dtype_switch.h"
#include "pid/sampler_step.h"

namespace pid {

// f(V{}): V the type of the velocities (StudentStepParams::v; DpmStepParams::v_c and v_u), float32 or bfloat16.
// Params: StudentStepParams or DpmStepParams.
template <typename Bf16, typename Params, typename F>
decltype(auto) with_sampler_step_dtypes(const char* fn, const Params& p, F&& f) {
  return with_dtype<Bf16>(fn, p.v_dtype, f);
}

}  // namespace pid
