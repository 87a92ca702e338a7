// CPU bindings of pid::qk_norm_rope and pid::attention: validate, allocate, call the torch-free kernels.
#include <torch/library.h>

#include "attention_check.h"

namespace pid {
namespace {

void qk_norm_rope_cpu_op(const at::Tensor& qkv, const at::Tensor& q_weight, const at::Tensor& k_weight,
                         const c10::optional<at::Tensor>& cos, const c10::optional<at::Tensor>& sin, double eps,
                         const c10::optional<at::Tensor>& q_out, std::int64_t q_offset,
                         const c10::optional<at::Tensor>& k_out, std::int64_t k_offset) {
  qk_norm_rope_cpu(check_qk_norm_rope(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset));
}

at::Tensor attention_cpu_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t window,
                            std::int64_t grid_h, std::int64_t grid_w, std::int64_t n_text) {
  AttentionParams p = check_attention(q, k, v, window, grid_h, grid_w, n_text);
  at::Tensor out = attention_output(q);
  p.o = out.mutable_data_ptr();
  attention_cpu(p);
  return out;
}

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("qk_norm_rope", &pid::qk_norm_rope_cpu_op);
  m.impl("attention", &pid::attention_cpu_op);
}
