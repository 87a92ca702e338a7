// Validation and kernel calls of the sampler step ops (pid::student_step, pid::dpm_step,
// pid::dpm_data_prediction), shared by the CPU and CUDA bindings. `Backend` supplies the kernels
// (student_step and dpm_step of pid/sampler_step.h) and a device guard; no arithmetic happens here.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>

#include "kernel_dtype.h"
#include "pid/sampler_step.h"

namespace pid {
namespace sampler_detail {

template <typename T>
const T* cptr(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}
template <typename T>
const T* cptr(const std::optional<at::Tensor>& t) {
  return t ? cptr<T>(*t) : nullptr;
}
template <typename T>
T* mptr(const at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// `t` must be a contiguous tensor of x's shape and device; float32 unless `allow_bf16`.
inline void check_like_x(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                         bool allow_bf16) {
  TORCH_CHECK(t.sizes() == x.sizes(), "pid::", op, ": ", name, " must have x's shape ", x.sizes(), ", got ",
              t.sizes());
  if (allow_bf16) {
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, "pid::", op, ": ", name,
                " must be float32 or bfloat16, got ", t.scalar_type());
  } else {
    TORCH_CHECK(t.scalar_type() == at::kFloat, "pid::", op, ": ", name, " must be float32, got ",
                t.scalar_type());
  }
  TORCH_CHECK(t.device() == x.device(), "pid::", op, ": all tensors must be on x's device ", x.device(),
              ", but ", name, " is on ", t.device());
  TORCH_CHECK(t.is_contiguous(), "pid::", op, ": ", name, " must be contiguous (strides ", t.strides(),
              "); call .contiguous(), or use the pid.ops function, which does");
}

inline void check_x(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "pid::", op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "pid::", op, ": x must be contiguous (strides ", x.strides(),
              "); call .contiguous(), or use the pid.ops function, which does");
}

// v_c (and v_u, if given): float32 or bfloat16, x's shape; v_u has v_c's dtype.
inline void check_velocities(const char* op, const at::Tensor& x, const at::Tensor& v_c,
                             const std::optional<at::Tensor>& v_u) {
  check_like_x(op, "v_c", v_c, x, true);
  if (v_u) {
    check_like_x(op, "v_u", *v_u, x, true);
    TORCH_CHECK(v_u->scalar_type() == v_c.scalar_type(), "pid::", op, ": v_u must have v_c's dtype ",
                v_c.scalar_type(), ", got ", v_u->scalar_type());
  }
}

}  // namespace sampler_detail

template <typename Backend>
at::Tensor student_step_op(const at::Tensor& x, const at::Tensor& v, const std::optional<at::Tensor>& eps,
                           double t, double t_next, const std::optional<at::Tensor>& x0_out) {
  using namespace sampler_detail;
  constexpr const char* op = "student_step";
  check_x(op, x);
  check_like_x(op, "v", v, x, true);
  if (eps) check_like_x(op, "eps", *eps, x, false);
  if (x0_out) check_like_x(op, "x0_out", *x0_out, x, false);
  const typename Backend::Guard guard(x.device());
  at::Tensor x_next = at::empty(x.sizes(), x.options());
  const StudentStepParams p{x.numel(), cptr<float>(x), v.const_data_ptr(), kernel_dtype(v.scalar_type()),
                            cptr<float>(eps), float(t), float(t_next), mptr<float>(x_next),
                            x0_out ? mptr<float>(*x0_out) : nullptr};
  Backend::student_step(p, x.device());
  return x_next;
}

template <typename Backend>
void dpm_launch(const at::Tensor& x, const at::Tensor& v_c, const std::optional<at::Tensor>& v_u,
                const float* d_prev, const DpmStepCoeffs& k, float* x_next, float* d) {
  using namespace sampler_detail;
  const DpmStepParams p{x.numel(), cptr<float>(x), v_c.const_data_ptr(), v_u ? v_u->const_data_ptr() : nullptr,
                        kernel_dtype(v_c.scalar_type()), d_prev, k, x_next, d};
  Backend::dpm_step(p, x.device());
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> dpm_step_op(const at::Tensor& x, const at::Tensor& v_c,
                                               const std::optional<at::Tensor>& v_u,
                                               const std::optional<at::Tensor>& d_prev, double guidance,
                                               double t, double t_ratio, double alpha_phi,
                                               double half_alpha_phi, double inv_r) {
  using namespace sampler_detail;
  constexpr const char* op = "dpm_step";
  check_x(op, x);
  check_velocities(op, x, v_c, v_u);
  if (d_prev) check_like_x(op, "d_prev", *d_prev, x, false);
  const typename Backend::Guard guard(x.device());
  at::Tensor x_next = at::empty(x.sizes(), x.options());
  at::Tensor d = at::empty(x.sizes(), x.options());
  const DpmStepCoeffs k{float(guidance), float(t),  float(t_ratio), float(alpha_phi), float(half_alpha_phi),
                        float(inv_r)};
  dpm_launch<Backend>(x, v_c, v_u, cptr<float>(d_prev), k, mptr<float>(x_next), mptr<float>(d));
  return {x_next, d};
}

template <typename Backend>
at::Tensor dpm_data_prediction_op(const at::Tensor& x, const at::Tensor& v_c, const std::optional<at::Tensor>& v_u,
                                  double guidance, double t) {
  using namespace sampler_detail;
  constexpr const char* op = "dpm_data_prediction";
  check_x(op, x);
  check_velocities(op, x, v_c, v_u);
  const typename Backend::Guard guard(x.device());
  at::Tensor d = at::empty(x.sizes(), x.options());
  const DpmStepCoeffs k{float(guidance), float(t), 0.f, 0.f, 0.f, 0.f};
  dpm_launch<Backend>(x, v_c, v_u, nullptr, k, nullptr, mptr<float>(d));
  return d;
}

}  // namespace pid
