"""Pure-PyTorch reference implementations of the pid ops: the source of truth for the kernels."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def sigma_gate(
    x: torch.Tensor,
    lq: torch.Tensor,
    lq_logit: torch.Tensor,
    w_x: torch.Tensor,
    alpha_sigma: torch.Tensor,
    logit_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq`` in float32, returned in x's dtype.

    x, lq: [B, L, D]; lq_logit: [B, L, G] (precomputed ``lq @ W_lq.T + bias``); w_x: [G, D];
    alpha_sigma: [B] (``exp(log_alpha) * sigma``). G = 1 gates per token, G = D per token and channel.
    With ``logit_dtype=torch.bfloat16`` a per-channel gate's logit is ``per_channel_logit`` in bfloat16 (the
    official ``content_proj`` Linear's rounding). The float32 expression is plain PyTorch: under bfloat16 autocast
    its matrix product runs in bfloat16, as the reference network's does.
    """
    B = x.shape[0]
    if logit_dtype == torch.bfloat16 and x.dim() == 3 and x.shape[-1] > 1 and lq_logit.shape == x.shape:
        return sigma_gate_apply(x, lq, per_channel_logit(x, lq_logit, w_x, logit_dtype), alpha_sigma)
    logit = (x.float() @ w_x.float().T) + lq_logit.float() - alpha_sigma.float().view(B, 1, 1)
    return (x.float() + torch.sigmoid(logit) * lq.float()).to(x.dtype)


def per_channel_logit(x: torch.Tensor, lq_logit: torch.Tensor, w_x: torch.Tensor,
                      logit_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The per-channel gate's logit ``x·W_xᵀ + lq_logit`` as one ``addmm`` in ``logit_dtype``, whatever autocast
    says: float32 (bfloat16 operands are exact in it), or bfloat16 (x and w_x rounded to bfloat16, the sum rounded
    once). x, lq_logit: [B, L, D]; w_x: [D, D]. Returns [B, L, D] in logit_dtype."""
    B, L, D = x.shape
    with torch.autocast(x.device.type, enabled=False):
        logit = torch.addmm(lq_logit.reshape(B * L, D).to(logit_dtype), x.reshape(B * L, D).to(logit_dtype),
                            w_x.to(logit_dtype).T)
    return logit.view(B, L, D)


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

    ``x0 = x − t·v`` in float64, cast to x's dtype (as the reference sampler does); then ``x_next = (1 − t_next)·x0 + t_next·eps``
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
    DPM-Solver++ on the flow schedule)."""
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


def qk_norm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    eps: float = 1e-6,
    out_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q and k, then interleaved-pair RoPE, as the reference network writes them.

    qkv: [B, N, 3, H, d] (the qkv projection's output viewed per head); weights [d]; rope: (cos, sin),
    each [N, d/2], or None (no rotation). RMSNorm: mean of squares in float32, the normalised value cast
    to qkv's dtype, times the weight (type promotion); RoPE in float32, cast back to that dtype.
    Returns q, k as [B, H, N, d] in ``out_dtype`` (default: the promoted dtype the reference produces).
    """

    def norm_rope(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
        if rope is not None:
            cos, sin = (t[None, :, None, :] for t in rope)
            pairs = y.float().reshape(*y.shape[:-1], -1, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            y = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(3).type_as(y)
        return y.transpose(1, 2).to(out_dtype or y.dtype).contiguous()

    return norm_rope(qkv[:, :, 0], q_weight), norm_rope(qkv[:, :, 1], k_weight)


def window_start(i: torch.Tensor, window: int, n: int) -> torch.Tensor:
    """First index of the size-``window`` neighbourhood of positions i on an axis of length n: the window
    [start, start + min(window, n)) is centred (odd window; even: window/2 before, window/2 - 1 after)
    and shifted to stay inside the axis."""
    return (i - window // 2).clamp(0, n - min(window, n))


def window_mask(
    window: int, grid: tuple[int, int], n_text: int = 0, n_queries: Optional[int] = None, device=None
) -> torch.Tensor:
    """Boolean [Sq, Sk] mask (True = may attend) of windowed attention over the joint sequence
    [n_text text tokens, then the row-major grid_h x grid_w image grid], Sk = n_text + grid_h * grid_w.

    Text queries see every key. The image query at (i, j) sees all text keys and the image keys in
    rows [window_start(i), + min(window, grid_h)) x columns [window_start(j), + min(window, grid_w)).
    The queries are the last ``n_queries`` tokens (default: all Sk).
    """
    gh, gw = grid
    S = n_text + gh * gw

    def axis(n: int) -> torch.Tensor:  # [n, n]: position i sees position a
        pos = torch.arange(n, device=device)
        start = window_start(pos, window, n)
        return (pos[None, :] >= start[:, None]) & (pos[None, :] < start[:, None] + min(window, n))

    image = (axis(gh)[:, None, :, None] & axis(gw)[None, :, None, :]).reshape(gh * gw, gh * gw)
    mask = torch.ones(S, S, dtype=torch.bool, device=device)
    mask[n_text:, n_text:] = image
    return mask[S - (S if n_queries is None else n_queries):]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: Optional[int] = None,
    grid: Optional[tuple[int, int]] = None,
    n_text: int = 0,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over q [B, H, Sq, d], k, v [B, H, Sk, d] (torch SDPA).

    window None: global attention. Otherwise windowed over [n_text text tokens, grid image tokens]
    with the explicit mask of ``window_mask`` (the queries are the last Sq tokens).
    """
    if window is None:
        return F.scaled_dot_product_attention(q, k, v)
    mask = window_mask(window, grid, n_text, q.shape[-2], device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with the reference numerics: statistics in float32, the normalised value
    cast back to x's dtype, then multiplied by the weight in float32 (the reference keeps float32 weights; bf16
    weights hold the same values), which promotes the result to float32."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight.float() * normed.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``1 + scale`` is rounded to scale's dtype (a bfloat16 scale
    gives a bfloat16 ``1 + scale``, as in the reference)."""
    return x * (1 + scale) + shift


def rms_norm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``modulate(rms_norm(x, weight, eps), shift, scale)``, cast to out_dtype when given.

    x: [B, L, D]; weight: [D]; shift, scale: [B, 1, D] (broadcast over L; any shape that broadcasts).
    The result's dtype is the promoted one (float32 with a float32 weight) unless out_dtype is given.
    """
    out = modulate(rms_norm(x, weight, eps), shift, scale)
    return out if out_dtype is None else out.to(out_dtype)


def pixel_chunk(mods: torch.Tensor, chunk: int, c: int) -> torch.Tensor:
    """Chunk ``chunk`` of the per-pixel modulation mods [N, P, K*c]: the view ``mods[..., chunk*c:(chunk+1)*c]``."""
    return mods[..., chunk * c : (chunk + 1) * c]


def rms_norm_modulate_pixels(
    x: torch.Tensor,
    weight: torch.Tensor,
    mods: torch.Tensor,
    shift_chunk: int,
    scale_chunk: int,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The PiT form: x [N, P, c] pixel tokens, per-pixel shift/scale read from chunks of
    mods [N, P, K*c] (K = 6 in PiD); returns the flattened [N, P*c] operand of compress_to_attn."""
    N, P, c = x.shape
    shift, scale = pixel_chunk(mods, shift_chunk, c), pixel_chunk(mods, scale_chunk, c)
    return rms_norm_modulate(x, weight, shift, scale, eps, out_dtype).reshape(N, P * c)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` in x's dtype. ``gate * y`` is computed in the promoted dtype of gate and y (so a
    bfloat16 gate times a bfloat16 y is rounded to bfloat16 before the float32 residual add, as PyTorch's type
    promotion rounds it in the reference).
    x, y: [B, L, D]; gate: [B, 1, D] or [B, L, D] (e.g. a chunk view of the per-pixel modulation)."""
    return (x + gate * y).to(x.dtype)
