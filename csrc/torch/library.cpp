// The one TORCH_LIBRARY(pid) block: schemas of every pid op. Each kernel family registers its kernels per back end
// with TORCH_LIBRARY_IMPL in its bindings (<family>_binding.cpp: CPU, <family>_binding_cuda.cpp: CUDA). Includes
// public headers only (csrc/include/pid/).
#include <torch/library.h>

#include <string>

#include "pid/cpu_capability.h"

TORCH_LIBRARY(pid, m) {
  // The CPU kernels' instruction-set variant in use ("baseline", "avx2", "avx512" or "native"; chosen once per
  // process, PID_CPU_CAPABILITY forces one), and the variants this build has that this CPU runs, comma-separated.
  m.def("cpu_capability() -> str", [] { return std::string(pid::cpu_capability()); });
  m.def("cpu_capabilities() -> str", [] { return pid::cpu_capabilities(); });
  // Fake (meta) kernels are registered in Python (torch.library.register_fake), one module per kernel family,
  // beside the family's Python faces; each set_python_module names the module of the ops defined after it.
  m.set_python_module("pid.ops._sigma_gate");
  m.def("sigma_gate(Tensor x, Tensor lq, Tensor lq_logit, Tensor w_x, Tensor alpha_sigma) -> Tensor");
  m.def("sigma_gate_apply(Tensor x, Tensor lq, Tensor logit, Tensor alpha_sigma) -> Tensor");
  // Sampler steps (pid/sampler_step.h). x0_out, when given, receives the student's x0 estimate.
  m.set_python_module("pid.ops._sampler_step");
  m.def("student_step(Tensor x, Tensor v, Tensor? eps, float t, float t_next, Tensor(a!)? x0_out=None) -> Tensor");
  m.def(
      "dpm_step(Tensor x, Tensor v_c, Tensor? v_u, Tensor? d_prev, float guidance, float t, float t_ratio, "
      "float alpha_phi, float half_alpha_phi, float inv_r) -> (Tensor x_next, Tensor D)");
  m.def("dpm_data_prediction(Tensor x, Tensor v_c, Tensor? v_u, float guidance, float t) -> Tensor");
  m.set_python_module("pid.ops._attention");
  // Per-head q/k RMSNorm + RoPE from qkv [B, N, 3, H, d] into rows [offset, offset + N) of dense
  // [B, H, rows, d] buffers (see csrc/include/pid/attention.h).
  m.def("qk_norm_rope(Tensor qkv, Tensor q_weight, Tensor k_weight, Tensor? cos, Tensor? sin, float eps, "
        "Tensor(a!)? q_out, int q_offset, Tensor(b!)? k_out, int k_offset) -> ()");
  // softmax(q k^T / sqrt(d)) v over [B, H, S, d]; window 0: global, else windowed over
  // [n_text text tokens, grid_h x grid_w image grid]. Output [B, H, Sq, d] laid out as [B, Sq, H, d].
  m.def("attention(Tensor q, Tensor k, Tensor v, int window, int grid_h, int grid_w, int n_text) -> Tensor");
  m.set_python_module("pid.ops._norm_modulate");
  // Fused RMSNorm + adaLN modulation (MMDiT: shift/scale [B, 1, D]; PiT: per-pixel chunks of mods
  // [N, P, K*c], output flattened [N, P*c]) and the gated residual x + gate * y. See pid/norm_modulate.h.
  m.def("rms_norm_modulate(Tensor x, Tensor weight, Tensor shift, Tensor scale, float eps, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("rms_norm_modulate_pixels(Tensor x, Tensor weight, Tensor mods, int shift_chunk, int scale_chunk, "
        "float eps, ScalarType? out_dtype=None) -> Tensor");
  m.def("gated_residual(Tensor x, Tensor gate, Tensor y) -> Tensor");
}
