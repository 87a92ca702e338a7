"""The Python face of every pid kernel: the compiled op when it can run, else the PyTorch reference.

Each face calls ``torch.ops.pid.<op>`` when the extension is loaded, the caller allows it (``use_kernel=True``,
the default) and the op supports the inputs' device, dtypes and shapes, and ``pid.ops.reference.<op>`` otherwise
(also when autograd is recording, since the compiled ops have no backward). One module per kernel family, each
with the fake (meta) kernels of its ops beside the faces; this module only re-exports them.
"""

from pid.ops import reference
from pid.ops._attention import AttentionAutotune, attention, default_attention_backend, qk_norm_rope
from pid.ops._norm_modulate import gated_residual, rms_norm_modulate, rms_norm_modulate_pixels
from pid.ops._sampler_step import dpm_data_prediction, dpm_step, student_step
from pid.ops._sigma_gate import sigma_gate, sigma_gate_apply

__all__ = [
    "AttentionAutotune",
    "attention",
    "default_attention_backend",
    "dpm_data_prediction",
    "dpm_step",
    "gated_residual",
    "qk_norm_rope",
    "reference",
    "rms_norm_modulate",
    "rms_norm_modulate_pixels",
    "sigma_gate",
    "sigma_gate_apply",
    "student_step",
]
