"""Faces of the sigma-gate family: `sigma_gate` and its epilogue `sigma_gate_apply` (csrc/include/pid/sigma_gate.h)."""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference
from pid.ops._face import KERNEL_DTYPES, check_one_device, kernel_applies

_LOGIT_DTYPES = (torch.float32, torch.bfloat16)


def sigma_gate(
    x: torch.Tensor,
    lq: torch.Tensor,
    lq_logit: torch.Tensor,
    w_x: torch.Tensor,
    alpha_sigma: torch.Tensor,
    *,
    logit_dtype: torch.dtype = torch.float32,
    use_kernel: bool = True,
) -> torch.Tensor:
    """Sigma-aware gate: ``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D]; lq_logit: [B, L, G] with G = 1 (per token) or D (per token and channel);
    w_x: [G, D]; alpha_sigma: [B] float32. For the compiled kernels x, lq, lq_logit, w_x share one dtype
    (float32 or bfloat16), or x is float32 and the others bfloat16 (the fast path: its float32 image
    stream, bfloat16 weights and latent features). Math in float32; the result has x's dtype.

    G = 1 runs the fused kernel ``pid::sigma_gate`` (one pass: dot product and gated residual). G = D is a
    [B·L, D] × [D, D] GEMM, run as ``addmm(lq_logit, x, w_x.T)`` on BLAS / cuBLAS, then the fused epilogue
    ``pid::sigma_gate_apply``. ``logit_dtype`` is that GEMM's: float32 (the default; bfloat16 operands are exact
    in it), or bfloat16: x and w_x rounded to bfloat16 and the whole logit rounded once to bfloat16, which is
    what the official network's ``content_proj`` Linear computes under bfloat16 autocast (G = 1 ignores it).
    ``use_kernel=False`` runs the PyTorch reference (``pid.ops.reference.sigma_gate``).
    """
    check_one_device("pid.ops.sigma_gate", x=x, lq=lq, lq_logit=lq_logit, w_x=w_x, alpha_sigma=alpha_sigma)
    if logit_dtype not in _LOGIT_DTYPES:
        raise ValueError(f"logit_dtype must be torch.float32 or torch.bfloat16, got {logit_dtype}")
    mixed = x.dtype == torch.float32 and lq.dtype == torch.bfloat16
    if (
        x.dtype in KERNEL_DTYPES
        and lq.dtype == lq_logit.dtype == w_x.dtype
        and (lq.dtype == x.dtype or mixed)
        and alpha_sigma.dtype == torch.float32
        and kernel_applies(use_kernel, x, lq, lq_logit, w_x, alpha_sigma)
    ):
        if x.dim() == 3 and x.shape[-1] > 1 and lq_logit.shape == x.shape and w_x.shape == (x.shape[-1], x.shape[-1]):
            logit = reference.per_channel_logit(x, lq_logit, w_x, logit_dtype)
            return torch.ops.pid.sigma_gate_apply(x.contiguous(), lq.contiguous(), logit, alpha_sigma.contiguous())
        # G = 1, and inputs of the wrong shape: the op's checks say what is wrong.
        return torch.ops.pid.sigma_gate(
            x.contiguous(), lq.contiguous(), lq_logit.contiguous(), w_x.contiguous(), alpha_sigma.contiguous()
        )
    return reference.sigma_gate(x, lq, lq_logit, w_x, alpha_sigma, logit_dtype)


def sigma_gate_apply(
    x: torch.Tensor, lq: torch.Tensor, logit: torch.Tensor, alpha_sigma: torch.Tensor, *, use_kernel: bool = True
) -> torch.Tensor:
    """The gate's epilogue for a precomputed logit: ``x + sigmoid(logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D] (for the compiled kernels float32 or bfloat16, or a float32 x with a bfloat16 lq); logit:
    [B, L, G], G = 1 or D, float32 or lq's dtype; alpha_sigma: [B] float32. Math in float32; the result has x's
    dtype.
    """
    check_one_device("pid.ops.sigma_gate_apply", x=x, lq=lq, logit=logit, alpha_sigma=alpha_sigma)
    if (
        x.dtype in KERNEL_DTYPES
        and (lq.dtype == x.dtype or (x.dtype == torch.float32 and lq.dtype == torch.bfloat16))
        and logit.dtype in (torch.float32, lq.dtype)
        and alpha_sigma.dtype == torch.float32
        and kernel_applies(use_kernel, x, lq, logit, alpha_sigma)
    ):
        return torch.ops.pid.sigma_gate_apply(x.contiguous(), lq.contiguous(), logit.contiguous(), alpha_sigma.contiguous())
    return reference.sigma_gate_apply(x, lq, logit, alpha_sigma)


if _extension.available():

    @torch.library.register_fake("pid::sigma_gate")
    def _sigma_gate_fake(x, lq, lq_logit, w_x, alpha_sigma):
        check_one_device("pid::sigma_gate", x=x, lq=lq, lq_logit=lq_logit, w_x=w_x, alpha_sigma=alpha_sigma)
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    @torch.library.register_fake("pid::sigma_gate_apply")
    def _sigma_gate_apply_fake(x, lq, logit, alpha_sigma):
        check_one_device("pid::sigma_gate_apply", x=x, lq=lq, logit=logit, alpha_sigma=alpha_sigma)
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate_apply: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)
