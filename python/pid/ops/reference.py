"""Pure-PyTorch reference implementations of the pid ops: the source of truth for the kernels."""

from __future__ import annotations

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


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with the reference numerics (spec §2.7, §10.3): statistics in float32, the normalised value
    cast back to x's dtype, then multiplied by the weight (float32 in PiD, which promotes the result)."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``1 + scale`` is rounded to scale's dtype (§10.5)."""
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
    """The PiT form (spec §2.11): x [N, P, c] pixel tokens, per-pixel shift/scale read from chunks of
    mods [N, P, K*c] (K = 6 in PiD); returns the flattened [N, P*c] operand of compress_to_attn."""
    N, P, c = x.shape
    shift, scale = pixel_chunk(mods, shift_chunk, c), pixel_chunk(mods, scale_chunk, c)
    return rms_norm_modulate(x, weight, shift, scale, eps, out_dtype).reshape(N, P * c)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` in x's dtype. ``gate * y`` is computed in the promoted dtype of gate and y (so a
    bfloat16 gate times a bfloat16 y is rounded to bfloat16 before the float32 residual add, §10.2).
    x, y: [B, L, D]; gate: [B, 1, D] or [B, L, D] (e.g. a chunk view of the per-pixel modulation)."""
    return (x + gate * y).to(x.dtype)
