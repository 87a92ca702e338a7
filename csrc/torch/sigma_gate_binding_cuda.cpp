// CUDA bindings of pid::sigma_gate and pid::sigma_gate_apply: validate, allocate on the inputs' device, launch on
// the current stream.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include "sigma_gate_check.h"

namespace pid {
namespace {

at::Tensor sigma_gate_cuda_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& lq_logit,
                              const at::Tensor& w_x, const at::Tensor& alpha_sigma) {
  SigmaGateParams p = check_sigma_gate(x, lq, lq_logit, w_x, alpha_sigma);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  p.out = out.mutable_data_ptr();
  void* stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  C10_CUDA_CHECK(static_cast<cudaError_t>(sigma_gate_cuda(p, stream)));
  return out;
}

at::Tensor sigma_gate_apply_cuda_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& logit,
                                    const at::Tensor& alpha_sigma) {
  SigmaGateApplyParams p = check_sigma_gate_apply(x, lq, logit, alpha_sigma);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  p.out = out.mutable_data_ptr();
  void* stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  C10_CUDA_CHECK(static_cast<cudaError_t>(sigma_gate_apply_cuda(p, stream)));
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CUDA, m) {
  m.impl("sigma_gate", &pid::sigma_gate_cuda_op);
  m.impl("sigma_gate_apply", &pid::sigma_gate_apply_cuda_op);
}
