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
