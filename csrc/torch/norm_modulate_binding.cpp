// CPU bindings of pid::rms_norm_modulate, pid::rms_norm_modulate_pixels and pid::gated_residual:
// validate, allocate, call the torch-free kernels.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "norm_modulate_check.h"

namespace pid {
namespace {

at::Tensor run_norm(NormModulateParams a, const at::Tensor& x, at::IntArrayRef out_shape, at::ScalarType out_dtype) {
  at::Tensor out = at::empty(out_shape, x.options().dtype(out_dtype));
  a.out = out.mutable_data_ptr();
  a.out_dtype = kernel_dtype(out_dtype);
  rms_norm_modulate_cpu(a);
  return out;
}

at::Tensor rms_norm_modulate_cpu_op(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift,
                                    const at::Tensor& scale, double eps, std::optional<at::ScalarType> out_dtype) {
  const NormModulateParams a = norm_check::rms_norm_modulate(x, weight, shift, scale, eps);
  return run_norm(a, x, x.sizes(), norm_check::norm_out_dtype("rms_norm_modulate", out_dtype));
}

at::Tensor rms_norm_modulate_pixels_cpu_op(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mods,
                                           std::int64_t shift_chunk, std::int64_t scale_chunk, double eps,
                                           std::optional<at::ScalarType> out_dtype) {
  const NormModulateParams a = norm_check::rms_norm_modulate_pixels(x, weight, mods, shift_chunk, scale_chunk, eps);
  return run_norm(a, x, {x.size(0), x.size(1) * x.size(2)},
                  norm_check::norm_out_dtype("rms_norm_modulate_pixels", out_dtype));
}

at::Tensor gated_residual_cpu_op(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& y) {
  GatedResidualParams a = norm_check::gated_residual(x, gate, y);
  at::Tensor out = at::empty(x.sizes(), x.options());
  a.out = out.mutable_data_ptr();
  gated_residual_cpu(a);
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("rms_norm_modulate", &pid::rms_norm_modulate_cpu_op);
  m.impl("rms_norm_modulate_pixels", &pid::rms_norm_modulate_pixels_cpu_op);
  m.impl("gated_residual", &pid::gated_residual_cpu_op);
}
