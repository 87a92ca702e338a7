"""The Python face of every pid kernel: the compiled op when it can run, else the reference.

Each op here calls ``torch.ops.pid.<op>`` when the extension is loaded and supports the inputs'
device and dtype, and ``pid.ops.reference.<op>`` otherwise (also when autograd is recording, since
the compiled ops have no backward).
"""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference

__all__ = ["sigma_gate", "reference"]

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
