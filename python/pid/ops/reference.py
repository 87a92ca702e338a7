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
) -> torch.Tensor:
    """``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq`` in float32, returned in x's dtype.

    x, lq: [B, L, D]; lq_logit: [B, L, G] (precomputed ``lq @ W_lq.T + bias``); w_x: [G, D];
    alpha_sigma: [B] (``exp(log_alpha) * sigma``). G = 1 gates per token, G = D per token and channel.
    """
    B = x.shape[0]
    logit = (x.float() @ w_x.float().T) + lq_logit.float() - alpha_sigma.float().view(B, 1, 1)
    return (x.float() + torch.sigmoid(logit) * lq.float()).to(x.dtype)


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
