// CPU bindings of pid::sigma_gate and pid::sigma_gate_apply: validate, allocate, call the torch-free kernels.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "sigma_gate_check.h"

namespace pid {
namespace {

at::Tensor sigma_gate_cpu_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& lq_logit,
                             const at::Tensor& w_x, const at::Tensor& alpha_sigma) {
  SigmaGateParams p = check_sigma_gate(x, lq, lq_logit, w_x, alpha_sigma);
  at::Tensor out = at::empty(x.sizes(), x.options());
  p.out = out.mutable_data_ptr();
  sigma_gate_cpu(p);
  return out;
}

at::Tensor sigma_gate_apply_cpu_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& logit,
                                   const at::Tensor& alpha_sigma) {
  SigmaGateApplyParams p = check_sigma_gate_apply(x, lq, logit, alpha_sigma);
  at::Tensor out = at::empty(x.sizes(), x.options());
  p.out = out.mutable_data_ptr();
  sigma_gate_apply_cpu(p);
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("sigma_gate", &pid::sigma_gate_cpu_op);
  m.impl("sigma_gate_apply", &pid::sigma_gate_apply_cpu_op);
}
