"""Faces of the norm/modulate family: RMSNorm + adaLN modulation (MMDiT and PiT forms) and the gated residual
(csrc/include/pid/norm_modulate.h)."""

from __future__ import annotations

import torch

from pid import _extension
from pid.ops import reference
from pid.ops._face import KERNEL_DTYPES, check_one_device, kernel_applies, unit_last


def _norm_kernel_applies(x, weight, mod_dtype, out_dtype) -> bool:
    return (
        x.dtype in KERNEL_DTYPES
        and weight.dim() == 1
        and weight.dtype == torch.float32
        and mod_dtype in KERNEL_DTYPES
        and out_dtype in (None, torch.float32, torch.bfloat16)
    )


def rms_norm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
    *,
    use_kernel: bool = True,
) -> torch.Tensor:
    """Fused RMSNorm + adaLN modulation (MMDiT form): ``RMSNorm(x)·(1 + scale) + shift``.

    x: [B, L, D] float32 or bfloat16; weight: [D] float32; shift, scale: [B, 1, D] (or [B, L, D]) in one
    dtype, float32 or bfloat16; strided views (chunks of the adaLN output) are read in place. Every step
    is rounded as :func:`pid.ops.reference.rms_norm_modulate` rounds it; the result is float32 (the
    reference's promoted dtype) or out_dtype (float32 or bfloat16, e.g. the dtype the next Linear computes in).
    """
    check_one_device("pid.ops.rms_norm_modulate", x=x, weight=weight, shift=shift, scale=scale)
    if (
        x.dim() == 3
        and shift.dim() == 3
        and scale.dim() == 3
        and shift.dtype == scale.dtype
        and _norm_kernel_applies(x, weight, scale.dtype, out_dtype)
        and kernel_applies(use_kernel, x, weight, shift, scale)
    ):
        return torch.ops.pid.rms_norm_modulate(
            unit_last(x), weight.contiguous(), unit_last(shift), unit_last(scale), eps, out_dtype
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
    *,
    use_kernel: bool = True,
) -> torch.Tensor:
    """Fused RMSNorm + per-pixel adaLN modulation (PiT form), flattened for ``compress_to_attn``.

    x: [N, P, c] pixel tokens; weight: [c] float32; mods: [N, P, K*c] per-pixel modulation (K = 6 in PiD),
    chunk k in channels [k*c, (k+1)*c); shift and scale are read from chunks shift_chunk and scale_chunk
    without copies. Returns [N, P*c], float32 or out_dtype.
    """
    check_one_device("pid.ops.rms_norm_modulate_pixels", x=x, weight=weight, mods=mods)
    if (
        x.dim() == 3
        and mods.dim() == 3
        and _norm_kernel_applies(x, weight, mods.dtype, out_dtype)
        and kernel_applies(use_kernel, x, weight, mods)
    ):
        return torch.ops.pid.rms_norm_modulate_pixels(
            unit_last(x), weight.contiguous(), unit_last(mods), shift_chunk, scale_chunk, eps, out_dtype
        )
    return reference.rms_norm_modulate_pixels(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, *, use_kernel: bool = True) -> torch.Tensor:
    """Gated residual ``x + gate * y`` in x's dtype (``gate * y`` rounded in the dtype of gate and y).

    x, y: [B, L, D]; gate: [B, 1, D] (MMDiT, broadcast over L) or [B, L, D], e.g. the strided view
    ``mods[..., k*c:(k+1)*c]`` of a per-pixel modulation chunk (PiT), read in place. float32 or bfloat16.
    """
    check_one_device("pid.ops.gated_residual", x=x, gate=gate, y=y)
    if (
        x.dim() == 3
        and gate.dim() == 3
        and y.dim() == 3
        and x.dtype in KERNEL_DTYPES
        and gate.dtype in KERNEL_DTYPES
        and y.dtype in KERNEL_DTYPES
        and kernel_applies(use_kernel, x, gate, y)
    ):
        return torch.ops.pid.gated_residual(unit_last(x), unit_last(gate), unit_last(y))
    return reference.gated_residual(x, gate, y)


if _extension.available():

    @torch.library.register_fake("pid::rms_norm_modulate")
    def _rms_norm_modulate_fake(x, weight, shift, scale, eps, out_dtype=None):
        check_one_device("pid::rms_norm_modulate", x=x, weight=weight, shift=shift, scale=scale)
        torch._check(x.dim() == 3, lambda: f"pid::rms_norm_modulate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape, dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::rms_norm_modulate_pixels")
    def _rms_norm_modulate_pixels_fake(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype=None):
        check_one_device("pid::rms_norm_modulate_pixels", x=x, weight=weight, mods=mods)
        torch._check(
            x.dim() == 3, lambda: f"pid::rms_norm_modulate_pixels: x must have shape [N, P, c], got {list(x.shape)}"
        )
        return x.new_empty((x.shape[0], x.shape[1] * x.shape[2]), dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::gated_residual")
    def _gated_residual_fake(x, gate, y):
        check_one_device("pid::gated_residual", x=x, gate=gate, y=y)
        torch._check(x.dim() == 3, lambda: f"pid::gated_residual: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)
