"""Pure-PyTorch reference implementations of the pid ops: the source of truth for the kernels."""

from __future__ import annotations

from typing import Optional

import torch


def sigma_gate(
    x: torch.Tensor,
    lq: torch.Tensor,
    lq_logit: torch.Tensor,
    w_x: torch.Tensor,
    alpha_sigma: torch.Tensor,
) -> torch.Tensor:
    """``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq`` in float32, returned in x's dtype.

    x, lq: [B, L, D]; lq_logit: [B, L, G] (precomputed ``lq @ W_lq.T + bias``); w_x: [G, D];
    alpha_sigma: [B] (``exp(log_alpha) * sigma``). G = 1 gates per token, G = D per token and channel.
    """
    B = x.shape[0]
    logit = (x.float() @ w_x.float().T) + lq_logit.float() - alpha_sigma.float().view(B, 1, 1)
    return (x.float() + torch.sigmoid(logit) * lq.float()).to(x.dtype)


def sigma_gate_apply(
    x: torch.Tensor,
    lq: torch.Tensor,
    logit: torch.Tensor,
    alpha_sigma: torch.Tensor,
) -> torch.Tensor:
    """The gate's epilogue for a precomputed logit: ``x + sigmoid(logit - alpha_sigma[b]) * lq`` in float32,
    returned in x's dtype. x, lq: [B, L, D]; logit: [B, L, G], G = 1 or D; alpha_sigma: [B]."""
    B = x.shape[0]
    gate = torch.sigmoid(logit.float() - alpha_sigma.float().view(B, 1, 1))
    return (x.float() + gate * lq.float()).to(x.dtype)


# ---- sampler steps -------------------------------------------------------------------------------
# The arithmetic of pid/sampling.py as it was written before the fused kernels (and as the kernels
# reproduce it bit for bit in float32): schedule scalars are float32 0-d tensors, so each product and
# sum is one float32 operation. Python floats passed in are first rounded to float32, as the kernels
# do. A bfloat16 velocity is up-cast to x's dtype before any arithmetic.


def _f32(value, device=None) -> torch.Tensor:
    """A float32 0-d tensor on x's device, as the schedule entries are in pid/sampling.py (on CUDA a CPU scalar
    divisor would turn the division into a multiplication by its reciprocal, which rounds differently)."""
    return torch.tensor(float(value), dtype=torch.float32, device=device)


def student_step(
    x: torch.Tensor,
    v: torch.Tensor,
    eps: Optional[torch.Tensor],
    t: float,
    t_next: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the distilled student sampler; returns ``(x_next, x0)``.

    ``x0 = x − t·v`` in float64, cast to x's dtype (spec §10.9); then ``x_next = (1 − t_next)·x0 + t_next·eps``
    (float32 arithmetic), or ``x_next = x0`` when ``eps`` is None (the last step)."""
    t64 = _f32(t).double().item()
    x0 = (x.double() - t64 * v.double()).to(x.dtype)
    if eps is None:
        return x0, x0
    tn = _f32(t_next, x.device)
    return (1.0 - tn) * x0 + tn * eps, x0


def _guided_velocity(x: torch.Tensor, v_c: torch.Tensor, v_u: Optional[torch.Tensor], guidance: float) -> torch.Tensor:
    dtype = torch.promote_types(x.dtype, v_c.dtype)
    if v_u is None:
        return v_c.to(dtype)
    v_u = v_u.to(dtype)
    return v_u + float(guidance) * (v_c.to(dtype) - v_u)


def dpm_data_prediction(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor],
    guidance: float,
    t: float,
) -> torch.Tensor:
    """The data prediction x̂0 of the flow model at time t, with classifier-free guidance when ``v_u`` is given:
    ``v = v_u + s·(v_c − v_u)``, ``ε̂ = (1 − t)·v + x``, ``D = (x − t·ε̂)/(1 − t)`` (the reference's operation order,
    spec §5.3)."""
    v = _guided_velocity(x, v_c, v_u, guidance)
    tt = _f32(t, x.device)
    eps = (1 - tt) * v + x
    return (x - tt * eps) / (1 - tt)


def dpm_step(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor],
    d_prev: Optional[torch.Tensor],
    guidance: float,
    t: float,
    t_ratio: float,
    alpha_phi: float,
    half_alpha_phi: float,
    inv_r: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step from x at time t: ``D = dpm_data_prediction(x, v_c, v_u, guidance, t)``, then
    ``x_next = t_ratio·x − αφ·D`` and, at second order (``d_prev`` given), ``x_next −= 0.5αφ·((1/r)·(D − d_prev))``.
    Returns ``(x_next, D)``."""
    d = dpm_data_prediction(x, v_c, v_u, guidance, t)
    x_next = _f32(t_ratio, x.device) * x - _f32(alpha_phi, x.device) * d
    if d_prev is not None:
        x_next = x_next - _f32(half_alpha_phi, x.device) * (_f32(inv_r, x.device) * (d - d_prev))
    return x_next, d
