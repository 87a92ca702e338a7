"""Small building blocks shared by the PiD network: norms, feed-forwards, embedders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm with the reference numerics: statistics in float32, the normalised value cast back to the
    input dtype, then multiplied by the weight in float32 (the reference keeps float32 weights; bf16 weights
    hold the same values), which promotes the result to float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.float() * normed.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x·(1 + scale) + shift."""
    return x * (1 + scale) + shift


class SwiGLU(nn.Module):
    """Bias-free SwiGLU feed-forward of the MMDiT blocks: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class PixelMLP(nn.Module):
    """Per-pixel MLP of the PiT blocks: fc2(gelu(fc1 x)), exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TokenEmbedder(nn.Module):
    """Linear projection, optionally followed by an RMSNorm of its output (the text embedder)."""

    def __init__(self, dim_in: int, dim_out: int, norm: bool = False):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.norm = RMSNorm(dim_out) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class TimestepEmbedder(nn.Module):
    """Timestep features [cos, sin](t·f_k), f_k = 10^(-k/half) (max period 10, cos first), then an MLP.
    `t` is flow time × 1000."""

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def frequencies(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period)
                          * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.reshape(-1, 1).float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.freq_dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.frequencies(t)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def pixel_sincos_axes(height: int, width: int, dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of the full-image 2-D sin/cos table, per axis, in float64: the column table
    [W, dim/2] (channels 0..dim/2−1) and the row table [H, dim/2] (the rest). Each is
    [sin(p·w_0..), cos(p·w_0..)] with w_k = 10000^(-k/(dim/4))."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter))

    def encode(n: int) -> torch.Tensor:
        angles = torch.arange(n, dtype=torch.float64, device=device)[:, None] * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return encode(width), encode(height)


def pixel_sincos_table(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """The full table [H·W, dim] (row-major pixels) that the reference adds; pid adds the axes instead."""
    cols, rows = pixel_sincos_axes(height, width, dim, device)
    return torch.cat([cols[None].expand(height, -1, -1), rows[:, None].expand(-1, width, -1)], dim=-1).reshape(
        height * width, dim)


class PixelEmbedder(nn.Module):
    """Per-pixel Linear(3 → c) plus the full-image sin/cos table, regrouped into patches [B·L, p², c]. The
    table is added per axis (same values as adding the [H·W, c] table, which is never built)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)
        self.dim = dim

    def forward(self, x: torch.Tensor, patch_size: int, axes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, _, H, W = x.shape
        p, half = patch_size, self.dim // 2
        tokens = self.proj(x.permute(0, 2, 3, 1))  # [B, H, W, c], a fresh tensor: safe to add in place
        cols, rows = axes
        tokens[..., :half] += cols.to(tokens.dtype)[None, None]
        tokens[..., half:] += rows.to(tokens.dtype)[None, :, None]
        tokens = tokens.view(B, H // p, p, W // p, p, self.dim).permute(0, 1, 3, 2, 4, 5)
        return tokens.reshape(B * (H // p) * (W // p), p * p, self.dim)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))
