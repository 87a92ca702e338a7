// The dtype combinations of pid::sigma_gate and pid::sigma_gate_apply (pid/sigma_gate.h), in one place for the
// CPU and the CUDA kernels: f is called with the element types of a supported combination (and instantiated only
// for those); any other combination throws std::invalid_argument. Bf16 as for with_dtypes (dtype_switch.h).
#pragma once

#include <type_traits>

#include "dtype_switch.h"
#include "pid/sigma_gate.h"

namespace pid {

// f(X{}, P{}): X the type of x and out, P that of lq, lq_logit and w_x.
template <typename Bf16, typename F>
decltype(auto) with_sigma_gate_dtypes(const char* fn, const SigmaGateParams& p, F&& f) {
  using Result = decltype(f(float{}, float{}));
  return with_dtypes<Bf16>(fn, {p.x_dtype, p.lq_dtype}, [&](auto x, auto lq) -> Result {
    if constexpr (std::is_same_v<decltype(x), Bf16> && std::is_same_v<decltype(lq), float>)
      throw_unsupported(fn, "a bfloat16 x needs bfloat16 lq, lq_logit and w_x, got float32");
    else
      return f(x, lq);
  });
}

// f(T{}, Q{}, Z{}): T the type of x and out, Q that of lq, Z that of logit.
template <typename Bf16, typename F>
decltype(auto) with_sigma_gate_apply_dtypes(const char* fn, const SigmaGateApplyParams& p, F&& f) {
  using Result = decltype(f(float{}, float{}, float{}));
  return with_dtypes<Bf16>(fn, {p.x_dtype, p.lq_dtype, p.logit_dtype}, [&](auto x, auto lq, auto logit) -> Result {
    using T = decltype(x);
    using Q = decltype(lq);
    using Z = decltype(logit);
    if constexpr (std::is_same_v<T, Bf16> && std::is_same_v<Q, float>)
      throw_unsupported(fn, "a bfloat16 x needs a bfloat16 lq, got float32");
    else if constexpr (std::is_same_v<Q, float> && std::is_same_v<Z, Bf16>)
      throw_unsupported(fn, "logit must be float32 or have lq's dtype (float32), got bfloat16");
    else
      return f(x, lq, logit);
  });
}

}  // namespace pid
