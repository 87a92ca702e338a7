"""Faces of the sampler-step family: one fused elementwise pass per sampler step (csrc/include/pid/sampler_step.h).
pid/sampling.py calls them."""

from __future__ import annotations

from typing import Optional

import torch

from pid import _extension
from pid.ops import reference
from pid.ops._face import KERNEL_DTYPES, check_one_device, contiguous, kernel_applies


def _kernel_ok(use_kernel: bool, x: torch.Tensor, velocities, f32_tensors) -> bool:
    v = [t for t in velocities if t is not None]
    f32 = [t for t in f32_tensors if t is not None]
    return (
        x.dtype == torch.float32
        and v[0].dtype in KERNEL_DTYPES
        and all(t.dtype == v[0].dtype for t in v)
        and all(t.dtype == torch.float32 for t in f32)
        and kernel_applies(use_kernel, x, *v, *f32)
    )


def student_step(
    x: torch.Tensor,
    v: torch.Tensor,
    eps: Optional[torch.Tensor],
    t: float,
    t_next: float,
    *,
    return_x0: bool = False,
    use_kernel: bool = True,
):
    """One step of the distilled student sampler (pid.sampling.sample_student).

    ``x0 = x − t·v`` in float64, rounded to float32; ``x_next = (1 − t_next)·x0 + t_next·eps`` in float32, or
    ``x_next = x0`` when ``eps`` is None (the last step). x, eps: float32; v: float32 or bfloat16, x's shape;
    t, t_next: the schedule's float32 entries (Python floats). Returns x_next, or ``(x_next, x0)``.
    """
    check_one_device("pid.ops.student_step", x=x, v=v, eps=eps)
    if _kernel_ok(use_kernel, x, [v], [eps]):
        x0 = torch.empty_like(x, memory_format=torch.contiguous_format) if return_x0 and eps is not None else None
        x_next = torch.ops.pid.student_step(x.contiguous(), v.contiguous(), contiguous(eps), float(t), float(t_next), x0)
        if return_x0:
            return x_next, (x_next if x0 is None else x0)
        return x_next
    x_next, x0 = reference.student_step(x, v, eps, t, t_next)
    return (x_next, x0) if return_x0 else x_next


def dpm_data_prediction(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor] = None,
    *,
    guidance: float = 1.0,
    t: float,
    use_kernel: bool = True,
) -> torch.Tensor:
    """DPM-Solver++ data prediction on the flow schedule: ``v = v_u + s·(v_c − v_u)`` (or v_c when v_u is None),
    ``ε̂ = (1 − t)·v + x``, ``D = (x − t·ε̂)/(1 − t)``, float32 in this order. x float32; v_c, v_u float32 or
    bfloat16 (one dtype); guidance s and t Python floats (rounded to float32)."""
    check_one_device("pid.ops.dpm_data_prediction", x=x, v_c=v_c, v_u=v_u)
    if _kernel_ok(use_kernel, x, [v_c, v_u], []):
        return torch.ops.pid.dpm_data_prediction(x.contiguous(), v_c.contiguous(), contiguous(v_u), float(guidance), float(t))
    return reference.dpm_data_prediction(x, v_c, v_u, guidance, t)


def dpm_step(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor],
    d_prev: Optional[torch.Tensor],
    *,
    guidance: float = 1.0,
    t: float,
    t_ratio: float,
    alpha_phi: float,
    half_alpha_phi: float = 0.0,
    inv_r: float = 0.0,
    use_kernel: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step from x at time t, in one pass: ``D = dpm_data_prediction(x, v_c, v_u, t)``, then
    ``x_next = t_ratio·x − αφ·D`` and, at second order (``d_prev`` given), ``x_next −= 0.5αφ·((1/r)·(D − d_prev))``.
    The scalars are float32 values computed by the caller (see pid.sampling.sample_dpmpp_2m). Returns
    ``(x_next, D)``."""
    check_one_device("pid.ops.dpm_step", x=x, v_c=v_c, v_u=v_u, d_prev=d_prev)
    if _kernel_ok(use_kernel, x, [v_c, v_u], [d_prev]):
        return torch.ops.pid.dpm_step(
            x.contiguous(), v_c.contiguous(), contiguous(v_u), contiguous(d_prev), float(guidance), float(t),
            float(t_ratio), float(alpha_phi), float(half_alpha_phi), float(inv_r),
        )
    return reference.dpm_step(x, v_c, v_u, d_prev, guidance, t, t_ratio, alpha_phi, half_alpha_phi, inv_r)


if _extension.available():

    def _check_float32_x(op, x):
        torch._check(x.dtype == torch.float32, lambda: f"pid::{op}: x must be float32, got {x.dtype}")

    @torch.library.register_fake("pid::student_step")
    def _student_step_fake(x, v, eps, t, t_next, x0_out=None):
        check_one_device("pid::student_step", x=x, v=v, eps=eps, x0_out=x0_out)
        _check_float32_x("student_step", x)
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("pid::dpm_step")
    def _dpm_step_fake(x, v_c, v_u, d_prev, guidance, t, t_ratio, alpha_phi, half_alpha_phi, inv_r):
        check_one_device("pid::dpm_step", x=x, v_c=v_c, v_u=v_u, d_prev=d_prev)
        _check_float32_x("dpm_step", x)
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, memory_format=torch.contiguous_format),
        )

    @torch.library.register_fake("pid::dpm_data_prediction")
    def _dpm_data_prediction_fake(x, v_c, v_u, guidance, t):
        check_one_device("pid::dpm_data_prediction", x=x, v_c=v_c, v_u=v_u)
        _check_float32_x("dpm_data_prediction", x)
        return torch.empty_like(x, memory_format=torch.contiguous_format)
