"""The Python face of every pid kernel: the compiled op when it can run, else the reference.

Each op here calls ``torch.ops.pid.<op>`` when the extension is loaded and supports the inputs'
device and dtype, and ``pid.ops.reference.<op>`` otherwise (also when autograd is recording, since
the compiled ops have no backward).
"""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference

__all__ = [
    "sigma_gate",
    "qk_norm_rope",
    "attention",
    "attention_dtype",
    "set_global_attention_backend",
    "global_attention_backend",
    "reference",
]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _use_kernel(*tensors: torch.Tensor) -> bool:
    if not _extension.available():
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    device = tensors[0].device
    if device.type == "cuda":
        return _extension.has_cuda_kernels()
    return device.type == "cpu"


def sigma_gate(
    x: torch.Tensor,
    lq: torch.Tensor,
    lq_logit: torch.Tensor,
    w_x: torch.Tensor,
    alpha_sigma: torch.Tensor,
) -> torch.Tensor:
    """Sigma-aware gate: ``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D]; lq_logit: [B, L, G] with G = 1 (per token) or D (per token and channel);
    w_x: [G, D]; alpha_sigma: [B] float32. x, lq, lq_logit, w_x share one dtype (float32 or bfloat16
    for the compiled kernels). Math in float32; the result has x's dtype.
    """
    if (
        x.dtype in _KERNEL_DTYPES
        and lq.dtype == lq_logit.dtype == w_x.dtype == x.dtype
        and alpha_sigma.dtype == torch.float32
        and _use_kernel(x, lq, lq_logit, w_x, alpha_sigma)
    ):
        return torch.ops.pid.sigma_gate(
            x.contiguous(), lq.contiguous(), lq_logit.contiguous(), w_x.contiguous(), alpha_sigma.contiguous()
        )
    return reference.sigma_gate(x, lq, lq_logit, w_x, alpha_sigma)


if _extension.available():

    @torch.library.register_fake("pid::sigma_gate")
    def _sigma_gate_fake(x, lq, lq_logit, w_x, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    # Fake kernels of the attention family (they must live in pid.ops, the schemas' python module).
    @torch.library.register_fake("pid::qk_norm_rope")
    def _qk_norm_rope_fake(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset):
        torch._check(qkv.dim() == 5, lambda: f"pid::qk_norm_rope: qkv must be [B, N, 3, H, d], got {list(qkv.shape)}")
        return None

    @torch.library.register_fake("pid::attention")
    def _attention_fake(q, k, v, window, grid_h, grid_w, n_text):
        torch._check(q.dim() == 4, lambda: f"pid::attention: q must be [B, H, Sq, d], got {list(q.shape)}")
        B, H, Sq, d = q.shape
        return q.new_empty((B, Sq, H, d)).permute(0, 2, 1, 3)  # the kernel's [B, Sq, H, d] layout


# The attention family (after _use_kernel and _KERNEL_DTYPES, which it uses).
from pid.ops._attention import (  # noqa: E402
    attention,
    attention_dtype,
    global_attention_backend,
    qk_norm_rope,
    set_global_attention_backend,
)
