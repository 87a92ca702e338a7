// The one TORCH_LIBRARY(pid) block: schemas of every pid op. Kernels are registered per back end
// with TORCH_LIBRARY_IMPL next to their bindings.
#include <torch/library.h>

TORCH_LIBRARY(pid, m) {
  // Fake (meta) kernels are registered in Python by this module (torch.library.register_fake).
  m.set_python_module("pid.ops");
  m.def("sigma_gate(Tensor x, Tensor lq, Tensor lq_logit, Tensor w_x, Tensor alpha_sigma) -> Tensor");
  // Per-head q/k RMSNorm + RoPE from qkv [B, N, 3, H, d] into rows [offset, offset + N) of dense
  // [B, H, rows, d] buffers (see csrc/include/pid/attention.h).
  m.def("qk_norm_rope(Tensor qkv, Tensor q_weight, Tensor k_weight, Tensor? cos, Tensor? sin, float eps, "
        "Tensor(a!)? q_out, int q_offset, Tensor(b!)? k_out, int k_offset) -> ()");
  // softmax(q k^T / sqrt(d)) v over [B, H, S, d]; window 0: global, else windowed over
  // [n_text text tokens, grid_h x grid_w image grid]. Output [B, H, Sq, d] laid out as [B, Sq, H, d].
  m.def("attention(Tensor q, Tensor k, Tensor v, int window, int grid_h, int grid_w, int n_text) -> Tensor");
}
