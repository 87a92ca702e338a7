// CPU binding of pid::sigma_gate: validate, allocate, call the torch-free kernel.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "sigma_gate_check.h"

namespace pid {
namespace {

at::Tensor sigma_gate_cpu_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& lq_logit,
                             const at::Tensor& w_x, const at::Tensor& alpha_sigma) {
  const SigmaGateSizes s = check_sigma_gate(x, lq, lq_logit, w_x, alpha_sigma);
  at::Tensor out = at::empty(x.sizes(), x.options());
  const float* a = cptr<float>(alpha_sigma);
  if (x.scalar_type() == at::kFloat && lq.scalar_type() == at::kFloat)
    sigma_gate_cpu(cptr<float>(x), cptr<float>(lq), cptr<float>(lq_logit), cptr<float>(w_x), a,
                   mptr<float>(out), s);
  else if (x.scalar_type() == at::kFloat)
    sigma_gate_cpu(cptr<float>(x), cptr<bf16>(lq), cptr<bf16>(lq_logit), cptr<bf16>(w_x), a,
                   mptr<float>(out), s);
  else
    sigma_gate_cpu(cptr<bf16>(x), cptr<bf16>(lq), cptr<bf16>(lq_logit), cptr<bf16>(w_x), a,
                   mptr<bf16>(out), s);
  return out;
}

at::Tensor sigma_gate_apply_cpu_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& logit,
                                   const at::Tensor& alpha_sigma) {
  const SigmaGateSizes s = check_sigma_gate_apply(x, lq, logit, alpha_sigma);
  at::Tensor out = at::empty(x.sizes(), x.options());
  const float* a = cptr<float>(alpha_sigma);
  const bool mixed = x.scalar_type() == at::kFloat && lq.scalar_type() == at::kBFloat16;
  if (mixed && logit.scalar_type() == at::kFloat)
    sigma_gate_apply_cpu(cptr<float>(x), cptr<bf16>(lq), cptr<float>(logit), a, mptr<float>(out), s);
  else if (mixed)
    sigma_gate_apply_cpu(cptr<float>(x), cptr<bf16>(lq), cptr<bf16>(logit), a, mptr<float>(out), s);
  else if (x.scalar_type() == at::kFloat)
    sigma_gate_apply_cpu(cptr<float>(x), cptr<float>(lq), cptr<float>(logit), a, mptr<float>(out), s);
  else if (logit.scalar_type() == at::kFloat)
    sigma_gate_apply_cpu(cptr<bf16>(x), cptr<bf16>(lq), cptr<float>(logit), a, mptr<bf16>(out), s);
  else
    sigma_gate_apply_cpu(cptr<bf16>(x), cptr<bf16>(lq), cptr<bf16>(logit), a, mptr<bf16>(out), s);
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("sigma_gate", &pid::sigma_gate_cpu_op);
  m.impl("sigma_gate_apply", &pid::sigma_gate_apply_cpu_op);
}
