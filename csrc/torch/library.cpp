// The one TORCH_LIBRARY(pid) block: schemas of every pid op. Kernels are registered per back end
// with TORCH_LIBRARY_IMPL next to their bindings.
#include <torch/library.h>

TORCH_LIBRARY(pid, m) {
  // Fake (meta) kernels are registered in Python by this module (torch.library.register_fake).
  m.set_python_module("pid.ops");
  m.def("sigma_gate(Tensor x, Tensor lq, Tensor lq_logit, Tensor w_x, Tensor alpha_sigma) -> Tensor");
  // Fused RMSNorm + adaLN modulation (MMDiT: shift/scale [B, 1, D]; PiT: per-pixel chunks of mods
  // [N, P, K*c], output flattened [N, P*c]) and the gated residual x + gate * y. See pid/norm_modulate.h.
  m.def("rms_norm_modulate(Tensor x, Tensor weight, Tensor shift, Tensor scale, float eps, "
        "ScalarType? out_dtype=None) -> Tensor");
  m.def("rms_norm_modulate_pixels(Tensor x, Tensor weight, Tensor mods, int shift_chunk, int scale_chunk, "
        "float eps, ScalarType? out_dtype=None) -> Tensor");
  m.def("gated_residual(Tensor x, Tensor gate, Tensor y) -> Tensor");
}
