"""The Python face of every pid kernel: the compiled op when it can run, else the reference.

Each op here calls ``torch.ops.pid.<op>`` when the extension is loaded and supports the inputs'
device and dtype, and ``pid.ops.reference.<op>`` otherwise (also when autograd is recording, since
the compiled ops have no backward).
"""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference

__all__ = ["gated_residual", "reference", "rms_norm_modulate", "rms_norm_modulate_pixels", "sigma_gate"]

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


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dimension has unit stride (strided row views are fine), else a copy."""
    return t if t.size(-1) <= 1 or t.stride(-1) == 1 else t.contiguous()


def _norm_kernel_applies(x, weight, mod_dtype, out_dtype) -> bool:
    return (
        x.dtype in _KERNEL_DTYPES
        and weight.dim() == 1
        and weight.dtype == torch.float32
        and mod_dtype in _KERNEL_DTYPES
        and out_dtype in (None, torch.float32, torch.bfloat16)
    )


def rms_norm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused RMSNorm + adaLN modulation (MMDiT form): ``RMSNorm(x)·(1 + scale) + shift``.

    x: [B, L, D] float32 or bfloat16; weight: [D] float32; shift, scale: [B, 1, D] (or [B, L, D]) in one
    dtype, float32 or bfloat16; strided views (chunks of the adaLN output) are read in place. Every step
    is rounded as :func:`pid.ops.reference.rms_norm_modulate` rounds it; the result is float32 (the
    reference's promoted dtype) or out_dtype (float32 or bfloat16, e.g. what autocast would cast it to).
    """
    if (
        x.dim() == 3
        and shift.dim() == 3
        and scale.dim() == 3
        and shift.dtype == scale.dtype
        and _norm_kernel_applies(x, weight, scale.dtype, out_dtype)
        and _use_kernel(x, weight, shift, scale)
    ):
        return torch.ops.pid.rms_norm_modulate(
            _unit_last(x), weight.contiguous(), _unit_last(shift), _unit_last(scale), eps, out_dtype
        )
    return reference.rms_norm_modulate(x, weight, shift, scale, eps, out_dtype)


def rms_norm_modulate_pixels(
    x: torch.Tensor,
    weight: torch.Tensor,
    mods: torch.Tensor,
    shift_chunk: int,
    scale_chunk: int,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused RMSNorm + per-pixel adaLN modulation (PiT form), flattened for ``compress_to_attn``.

    x: [N, P, c] pixel tokens; weight: [c] float32; mods: [N, P, K*c] per-pixel modulation (K = 6 in PiD),
    chunk k in channels [k*c, (k+1)*c); shift and scale are read from chunks shift_chunk and scale_chunk
    without copies. Returns [N, P*c], float32 or out_dtype.
    """
    if (
        x.dim() == 3
        and mods.dim() == 3
        and _norm_kernel_applies(x, weight, mods.dtype, out_dtype)
        and _use_kernel(x, weight, mods)
    ):
        return torch.ops.pid.rms_norm_modulate_pixels(
            _unit_last(x), weight.contiguous(), _unit_last(mods), shift_chunk, scale_chunk, eps, out_dtype
        )
    return reference.rms_norm_modulate_pixels(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gated residual ``x + gate * y`` in x's dtype (``gate * y`` rounded in the dtype of gate and y).

    x, y: [B, L, D]; gate: [B, 1, D] (MMDiT, broadcast over L) or [B, L, D], e.g. the strided view
    ``mods[..., k*c:(k+1)*c]`` of a per-pixel modulation chunk (PiT), read in place. float32 or bfloat16.
    """
    if (
        x.dim() == 3
        and gate.dim() == 3
        and y.dim() == 3
        and x.dtype in _KERNEL_DTYPES
        and gate.dtype in _KERNEL_DTYPES
        and y.dtype in _KERNEL_DTYPES
        and _use_kernel(x, gate, y)
    ):
        return torch.ops.pid.gated_residual(_unit_last(x), _unit_last(gate), _unit_last(y))
    return reference.gated_residual(x, gate, y)


if _extension.available():

    @torch.library.register_fake("pid::sigma_gate")
    def _sigma_gate_fake(x, lq, lq_logit, w_x, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    @torch.library.register_fake("pid::rms_norm_modulate")
    def _rms_norm_modulate_fake(x, weight, shift, scale, eps, out_dtype=None):
        torch._check(x.dim() == 3, lambda: f"pid::rms_norm_modulate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape, dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::rms_norm_modulate_pixels")
    def _rms_norm_modulate_pixels_fake(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype=None):
        torch._check(
            x.dim() == 3, lambda: f"pid::rms_norm_modulate_pixels: x must have shape [N, P, c], got {list(x.shape)}"
        )
        return x.new_empty((x.shape[0], x.shape[1] * x.shape[2]), dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::gated_residual")
    def _gated_residual_fake(x, gate, y):
        torch._check(x.dim() == 3, lambda: f"pid::gated_residual: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)
