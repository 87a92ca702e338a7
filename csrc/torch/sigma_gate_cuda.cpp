// CUDA binding of pid::sigma_gate: validate, allocate on the inputs' device, launch on the current stream.
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
  const SigmaGateSizes s = check_sigma_gate(x, lq, lq_logit, w_x, alpha_sigma);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  void* stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const float* a = cptr<float>(alpha_sigma);
  int err;
  if (x.scalar_type() == at::kFloat && lq.scalar_type() == at::kFloat)
    err = sigma_gate_cuda(cptr<float>(x), cptr<float>(lq), cptr<float>(lq_logit), cptr<float>(w_x),
                          a, mptr<float>(out), s, stream);
  else if (x.scalar_type() == at::kFloat)
    err = sigma_gate_cuda(cptr<float>(x), cptr<bf16>(lq), cptr<bf16>(lq_logit), cptr<bf16>(w_x),
                          a, mptr<float>(out), s, stream);
  else
    err = sigma_gate_cuda(cptr<bf16>(x), cptr<bf16>(lq), cptr<bf16>(lq_logit), cptr<bf16>(w_x), a,
                          mptr<bf16>(out), s, stream);
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
  return out;
}

at::Tensor sigma_gate_apply_cuda_op(const at::Tensor& x, const at::Tensor& lq, const at::Tensor& logit,
                                    const at::Tensor& alpha_sigma) {
  const SigmaGateSizes s = check_sigma_gate_apply(x, lq, logit, alpha_sigma);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  void* stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const float* a = cptr<float>(alpha_sigma);
  int err;
  const bool mixed = x.scalar_type() == at::kFloat && lq.scalar_type() == at::kBFloat16;
  if (mixed && logit.scalar_type() == at::kFloat)
    err = sigma_gate_apply_cuda(cptr<float>(x), cptr<bf16>(lq), cptr<float>(logit), a, mptr<float>(out), s,
                                stream);
  else if (mixed)
    err = sigma_gate_apply_cuda(cptr<float>(x), cptr<bf16>(lq), cptr<bf16>(logit), a, mptr<float>(out), s,
                                stream);
  else if (x.scalar_type() == at::kFloat)
    err = sigma_gate_apply_cuda(cptr<float>(x), cptr<float>(lq), cptr<float>(logit), a, mptr<float>(out), s,
                                stream);
  else if (logit.scalar_type() == at::kFloat)
    err = sigma_gate_apply_cuda(cptr<bf16>(x), cptr<bf16>(lq), cptr<float>(logit), a, mptr<bf16>(out), s,
                                stream);
  else
    err = sigma_gate_apply_cuda(cptr<bf16>(x), cptr<bf16>(lq), cptr<bf16>(logit), a, mptr<bf16>(out), s,
                                stream);
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CUDA, m) {
  m.impl("sigma_gate", &pid::sigma_gate_cuda_op);
  m.impl("sigma_gate_apply", &pid::sigma_gate_apply_cuda_op);
}
