"""The Python face of every pid kernel: the compiled op when it can run, else the reference.

Each op here calls ``torch.ops.pid.<op>`` when the extension is loaded and supports the inputs'
device and dtype, and ``pid.ops.reference.<op>`` otherwise (also when autograd is recording, since
the compiled ops have no backward).
"""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference

__all__ = ["sigma_gate", "sigma_gate_apply", "reference"]

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

    G = 1 runs the fused kernel ``pid::sigma_gate`` (one pass: dot product and gated residual). G = D is a
    [B·L, D] × [D, D] GEMM: it runs as ``logit = addmm(lq_logit, x, w_x.T)`` in float32 on BLAS / cuBLAS,
    then the fused epilogue ``pid::sigma_gate_apply``.
    """
    if (
        x.dtype in _KERNEL_DTYPES
        and lq.dtype == lq_logit.dtype == w_x.dtype == x.dtype
        and alpha_sigma.dtype == torch.float32
        and _use_kernel(x, lq, lq_logit, w_x, alpha_sigma)
    ):
        if x.dim() == 3 and x.shape[-1] > 1 and lq_logit.shape == x.shape and w_x.shape == (x.shape[-1], x.shape[-1]):
            return _sigma_gate_per_dim(x, lq, lq_logit, w_x, alpha_sigma)
        # G = 1, and inputs of the wrong shape: the op's checks say what is wrong.
        return torch.ops.pid.sigma_gate(
            x.contiguous(), lq.contiguous(), lq_logit.contiguous(), w_x.contiguous(), alpha_sigma.contiguous()
        )
    return reference.sigma_gate(x, lq, lq_logit, w_x, alpha_sigma)


def _sigma_gate_per_dim(x, lq, lq_logit, w_x, alpha_sigma):
    B, L, D = x.shape
    # float32 GEMM whatever autocast says: the gate's contract is float32 math (bf16 values are exact in it).
    with torch.autocast(x.device.type, enabled=False):
        logit = torch.addmm(lq_logit.reshape(B * L, D).float(), x.reshape(B * L, D).float(), w_x.float().T)
    return torch.ops.pid.sigma_gate_apply(
        x.contiguous(), lq.contiguous(), logit.view(B, L, D), alpha_sigma.contiguous()
    )


def sigma_gate_apply(x: torch.Tensor, lq: torch.Tensor, logit: torch.Tensor, alpha_sigma: torch.Tensor) -> torch.Tensor:
    """The gate's epilogue for a precomputed logit: ``x + sigmoid(logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D] (float32 or bfloat16 for the compiled kernels); logit: [B, L, G], G = 1 or D, float32 or
    x's dtype; alpha_sigma: [B] float32. Math in float32; the result has x's dtype.
    """
    if (
        x.dtype in _KERNEL_DTYPES
        and lq.dtype == x.dtype
        and logit.dtype in (torch.float32, x.dtype)
        and alpha_sigma.dtype == torch.float32
        and _use_kernel(x, lq, logit, alpha_sigma)
    ):
        return torch.ops.pid.sigma_gate_apply(x.contiguous(), lq.contiguous(), logit.contiguous(), alpha_sigma.contiguous())
    return reference.sigma_gate_apply(x, lq, logit, alpha_sigma)


if _extension.available():

    @torch.library.register_fake("pid::sigma_gate")
    def _sigma_gate_fake(x, lq, lq_logit, w_x, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    @torch.library.register_fake("pid::sigma_gate_apply")
    def _sigma_gate_apply_fake(x, lq, logit, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate_apply: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)
