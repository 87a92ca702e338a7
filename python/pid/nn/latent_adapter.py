"""The latent adapter: a CNN that maps the LDM latent onto the patch grid, linear heads that
turn it into one feature per injection point, and the sigma-aware gates that add those features to the
image stream. Everything except the x-dependent half of each gate depends only on the latent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import PidConfig
from ..plan import ExecutionPlan
from .layers import GroupNorm


@dataclass
class GateInput:
    """What one gate needs from the latent, computed once per decode: its feature and the latent half of its logit,
    or (with `ExecutionPlan.keep_gate_features` off, to save memory) only the CNN's features and the head that makes
    the gate's feature from them at each use."""

    lq: Optional[torch.Tensor]  # [B, L, D] latent feature (None: made at each use by `head` from `tokens`)
    lq_logit: Optional[torch.Tensor]  # [B, L, G] = lq·W_lqᵀ + b, the latent half of the gate logit
    alpha_sigma: torch.Tensor  # [B] float32 = exp(log_alpha)·σ
    tokens: Optional[torch.Tensor] = None  # [B, L, Hd] the latent CNN's features
    head: Optional[nn.Linear] = None  # the gate's output head (Hd → D)


class SigmaGate(nn.Module):
    """x + sigmoid(W·[x; lq] + b − exp(log_alpha)·σ) ⊙ lq, one logit per token (width 1) or per channel."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.dim = dim
        self.content_proj = nn.Linear(2 * dim, width)
        self.log_alpha = nn.Parameter(torch.tensor(1.6094379124341003))  # ln 5, the reference init

    def prepare(self, tokens: torch.Tensor, head: nn.Linear, sigma: torch.Tensor, keep: bool = True) -> GateInput:
        """The gate's input from the latent CNN's features [B, L, Hd] and its head; `keep=False` keeps the features
        and makes the gate's feature and logit half at each use instead (the same values)."""
        alpha_sigma = self.log_alpha.float().exp() * sigma.float()  # float32, as the reference
        if not keep:
            return GateInput(None, None, alpha_sigma, tokens, head)
        return GateInput(*self._latent_half(head(tokens)), alpha_sigma)

    def _latent_half(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_lq = self.content_proj.weight[:, self.dim:]
        return lq, F.linear(lq, w_lq, self.content_proj.bias)

    def forward(self, x: torch.Tensor, inp: GateInput, *, plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        """Returns at least float32: in the reference the float32 sigma term promotes the gate, so the image
        stream becomes float32 here even under bf16 autocast (docs/architecture.md, Precision)."""
        plan = plan or ExecutionPlan()
        w_x = self.content_proj.weight[:, : self.dim]
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        lq, lq_logit = (inp.lq, inp.lq_logit) if inp.lq is not None else self._latent_half(inp.head(inp.tokens))
        return ops.sigma_gate(x, lq, lq_logit, w_x, inp.alpha_sigma, logit_dtype=plan.gate_logit_dtype,
                              use_kernel=plan.kernels)


class ResBlock(nn.Module):
    def __init__(self, channels: int, padding_mode: str):
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(4, channels), nn.SiLU(), _conv3x3(channels, channels, padding_mode),
            GroupNorm(4, channels), nn.SiLU(), _conv3x3(channels, channels, padding_mode))

    def forward(self, x: torch.Tensor, *, plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        norm1, act1, conv1, norm2, act2, conv2 = self.block  # a Sequential only for the reference's keys
        h = conv1(act1(norm1(x, plan=plan)))
        return x + conv2(act2(norm2(h, plan=plan)))


def _conv3x3(c_in: int, c_out: int, padding_mode: str) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, padding_mode=padding_mode)


def align_latent_to_grid(latent: torch.Tensor, grid_h: int, grid_w: int, config: PidConfig) -> torch.Tensor:
    """Unpatchify (FLUX.2 v1.5) and bring the latent onto the patch grid: nearest upsampling when a latent
    cell covers several patches (every release), identity/bilinear at ratio 1, space-to-depth below 1."""
    f = config.lq_latent_unpatchify_factor
    if f > 1:
        latent = F.pixel_shuffle(latent, f)  # channel c·f² + i·f + j → position (h·f + i, w·f + j)
    ratio = config.latent_to_patch_ratio
    if ratio > 1:
        return F.interpolate(latent, size=(grid_h, grid_w), mode="nearest")
    if ratio == 1:
        if latent.shape[-2:] != (grid_h, grid_w):
            latent = F.interpolate(latent, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        return latent
    fold = config.latent_fold_factor
    if latent.shape[-2:] != (grid_h * fold, grid_w * fold):
        latent = F.interpolate(latent, size=(grid_h * fold, grid_w * fold), mode="bilinear", align_corners=False)
    B, C = latent.shape[:2]
    latent = latent.reshape(B, C, grid_h, fold, grid_w, fold).permute(0, 1, 3, 5, 2, 4)
    return latent.reshape(B, C * fold * fold, grid_h, grid_w)


class LatentProjection(nn.Module):
    """The `lq_proj` module: CNN trunk, output heads (one per gate, plus the PiT head) and the gates."""

    def __init__(self, config: PidConfig):
        super().__init__()
        self.config = config
        hd, pad = config.lq_hidden_dim, config.lq_conv_padding_mode
        self.latent_proj = nn.Sequential(
            _conv3x3(config.latent_conv_in_channels, hd, pad), nn.SiLU(), _conv3x3(hd, hd, pad),
            *[ResBlock(hd, pad) for _ in range(config.lq_num_res_blocks)])
        self.output_heads = nn.ModuleList(nn.Linear(hd, config.hidden_size) for _ in range(config.num_gates))
        self.pit_head = nn.Linear(hd, config.hidden_size) if config.pit_lq_inject else None
        self.gate_modules = nn.ModuleList(
            SigmaGate(config.hidden_size, config.gate_width) for _ in range(config.num_gates))

    def trunk(self, latent: torch.Tensor, grid_h: int, grid_w: int, *,
              plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        """Latent [B, C, h, w] → patch-grid features [B, L, Hd] (row-major tokens)."""
        feats = align_latent_to_grid(latent, grid_h, grid_w, self.config)
        stem, blocks = self.latent_proj[:3], self.latent_proj[3:]  # conv, SiLU, conv; then the residual blocks
        feats = stem(feats)
        for block in blocks:
            feats = block(feats, plan=plan)
        return feats.flatten(2).transpose(1, 2)
