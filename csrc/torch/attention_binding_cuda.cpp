// CUDA bindings of pid::qk_norm_rope and pid::attention: validate, allocate on the inputs' device,
// launch on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include "attention_check.h"

namespace pid {
namespace {

void qk_norm_rope_cuda_op(const at::Tensor& qkv, const at::Tensor& q_weight, const at::Tensor& k_weight,
                          const c10::optional<at::Tensor>& cos, const c10::optional<at::Tensor>& sin, double eps,
                          const c10::optional<at::Tensor>& q_out, std::int64_t q_offset,
                          const c10::optional<at::Tensor>& k_out, std::int64_t k_offset) {
  const QkNormRopeParams p =
      check_qk_norm_rope(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset);
  const c10::cuda::CUDAGuard guard(qkv.device());
  void* stream = c10::cuda::getCurrentCUDAStream(qkv.device().index()).stream();
  C10_CUDA_CHECK(static_cast<cudaError_t>(qk_norm_rope_cuda(p, stream)));
}

at::Tensor attention_cuda_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t window,
                             std::int64_t grid_h, std::int64_t grid_w, std::int64_t n_text) {
  AttentionParams p = check_attention(q, k, v, window, grid_h, grid_w, n_text);
  TORCH_CHECK(attention_cuda_supports_head_dim(p.D), "pid::attention: the CUDA kernel takes head_dim 64 or 72, got ",
              p.D, "; use pid.ops.attention, which falls back to torch SDPA / the reference");
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = attention_output(q);
  p.o = out.mutable_data_ptr();
  void* stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  C10_CUDA_CHECK(static_cast<cudaError_t>(attention_cuda(p, stream)));
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CUDA, m) {
  m.impl("qk_norm_rope", &pid::qk_norm_rope_cuda_op);
  m.impl("attention", &pid::attention_cuda_op);
}
