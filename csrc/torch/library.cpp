// The one TORCH_LIBRARY(pid) block: schemas of every pid op. Kernels are registered per back end
// with TORCH_LIBRARY_IMPL next to their bindings.
#include <torch/library.h>

TORCH_LIBRARY(pid, m) {
  // Fake (meta) kernels are registered in Python by this module (torch.library.register_fake).
  m.set_python_module("pid.ops");
  m.def("sigma_gate(Tensor x, Tensor lq, Tensor lq_logit, Tensor w_x, Tensor alpha_sigma) -> Tensor");
  m.def("sigma_gate_apply(Tensor x, Tensor lq, Tensor logit, Tensor alpha_sigma) -> Tensor");
}
