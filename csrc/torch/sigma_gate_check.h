// Input validation of pid::sigma_gate and pid::sigma_gate_apply, shared by the CPU and CUDA bindings: checks the
// tensors and describes them as the kernels' params (the caller sets the output, out).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <utility>

#include "kernel_dtype.h"
#include "pid/sigma_gate.h"

namespace pid {

inline SigmaGateParams check_sigma_gate(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& lq_logit,
                                        const at::Tensor& w_x, const at::Tensor& alpha_sigma) {
  TORCH_CHECK(x.dim() == 3, "pid::sigma_gate: x must have shape [B, L, D], got ", x.sizes());
  const std::int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "pid::sigma_gate: x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(lq.sizes() == x.sizes(), "pid::sigma_gate: lq must have x's shape ", x.sizes(),
              ", got ", lq.sizes());
  TORCH_CHECK(lq_logit.dim() == 3 && lq_logit.size(0) == B && lq_logit.size(1) == L &&
                  (lq_logit.size(2) == 1 || lq_logit.size(2) == D),
              "pid::sigma_gate: lq_logit must have shape [B, L, 1] or [B, L, D] = [", B, ", ", L,
              ", 1 or ", D, "], got ", lq_logit.sizes());
  const std::int64_t G = lq_logit.size(2);
  TORCH_CHECK(w_x.dim() == 2 && w_x.size(0) == G && w_x.size(1) == D,
              "pid::sigma_gate: w_x must have shape [G, D] = [", G, ", ", D,
              "] (G = lq_logit.size(-1)), got ", w_x.sizes());
  TORCH_CHECK(alpha_sigma.dim() == 1 && alpha_sigma.size(0) == B,
              "pid::sigma_gate: alpha_sigma must have shape [B] = [", B, "], got ", alpha_sigma.sizes());
  TORCH_CHECK(alpha_sigma.scalar_type() == at::kFloat,
              "pid::sigma_gate: alpha_sigma must be float32, got ", alpha_sigma.scalar_type());

  const std::pair<const char*, const at::Tensor*> inputs[] = {
      {"x", &x}, {"lq", &lq}, {"lq_logit", &lq_logit}, {"w_x", &w_x}, {"alpha_sigma", &alpha_sigma}};
  // lq, lq_logit and w_x share one dtype; x has it too, or is float32 while they are bfloat16.
  const at::ScalarType p = lq.scalar_type();
  TORCH_CHECK(p == x.scalar_type() || (x.scalar_type() == at::kFloat && p == at::kBFloat16),
              "pid::sigma_gate: lq must have x's dtype ", x.scalar_type(),
              " (or be bfloat16 with a float32 x), got ", p);
  for (const auto& [name, t] : inputs) {
    if (t != &alpha_sigma && t != &x)
      TORCH_CHECK(t->scalar_type() == p, "pid::sigma_gate: ", name, " must have lq's dtype ", p, ", got ",
                  t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "pid::sigma_gate: all inputs must be on x's device ",
                x.device(), ", but ", name, " is on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "pid::sigma_gate: ", name, " must be contiguous (strides ",
                t->strides(), "); call .contiguous(), or use pid.ops.sigma_gate, which does");
  }
  return SigmaGateParams{SigmaGateSizes{B, L, D, G},
                         x.const_data_ptr(),
                         lq.const_data_ptr(),
                         lq_logit.const_data_ptr(),
                         w_x.const_data_ptr(),
                         alpha_sigma.const_data_ptr<float>(),
                         nullptr,
                         kernel_dtype(x.scalar_type()),
                         kernel_dtype(lq.scalar_type())};
}

inline SigmaGateApplyParams check_sigma_gate_apply(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& logit,
                                                   const at::Tensor& alpha_sigma) {
  TORCH_CHECK(x.dim() == 3, "pid::sigma_gate_apply: x must have shape [B, L, D], got ", x.sizes());
  const std::int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "pid::sigma_gate_apply: x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(lq.sizes() == x.sizes(), "pid::sigma_gate_apply: lq must have x's shape ", x.sizes(), ", got ",
              lq.sizes());
  TORCH_CHECK(lq.scalar_type() == x.scalar_type() || (x.scalar_type() == at::kFloat && lq.scalar_type() == at::kBFloat16),
              "pid::sigma_gate_apply: lq must have x's dtype ", x.scalar_type(),
              " (or be bfloat16 with a float32 x), got ", lq.scalar_type());
  TORCH_CHECK(logit.dim() == 3 && logit.size(0) == B && logit.size(1) == L &&
                  (logit.size(2) == 1 || logit.size(2) == D),
              "pid::sigma_gate_apply: logit must have shape [B, L, 1] or [B, L, D] = [", B, ", ", L, ", 1 or ", D,
              "], got ", logit.sizes());
  TORCH_CHECK(logit.scalar_type() == at::kFloat || logit.scalar_type() == lq.scalar_type(),
              "pid::sigma_gate_apply: logit must be float32 or have lq's dtype ", lq.scalar_type(), ", got ",
              logit.scalar_type());
  TORCH_CHECK(alpha_sigma.dim() == 1 && alpha_sigma.size(0) == B,
              "pid::sigma_gate_apply: alpha_sigma must have shape [B] = [", B, "], got ", alpha_sigma.sizes());
  TORCH_CHECK(alpha_sigma.scalar_type() == at::kFloat,
              "pid::sigma_gate_apply: alpha_sigma must be float32, got ", alpha_sigma.scalar_type());
  const std::pair<const char*, const at::Tensor*> inputs[] = {
      {"x", &x}, {"lq", &lq}, {"logit", &logit}, {"alpha_sigma", &alpha_sigma}};
  for (const auto& [name, t] : inputs) {
    TORCH_CHECK(t->device() == x.device(), "pid::sigma_gate_apply: all inputs must be on x's device ",
                x.device(), ", but ", name, " is on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "pid::sigma_gate_apply: ", name, " must be contiguous (strides ",
                t->strides(), "); call .contiguous(), or use pid.ops.sigma_gate_apply, which does");
  }
  return SigmaGateApplyParams{SigmaGateSizes{B, L, D, logit.size(2)},
                              x.const_data_ptr(),
                              lq.const_data_ptr(),
                              logit.const_data_ptr(),
                              alpha_sigma.const_data_ptr<float>(),
                              nullptr,
                              kernel_dtype(x.scalar_type()),
                              kernel_dtype(lq.scalar_type()),
                              kernel_dtype(logit.scalar_type())};
}

}  // namespace pid
