"""Rotary position embeddings: 2-D (image patch grid, original or NTK-aware) and 1-D (text).

Tables are (cos, sin) pairs of shape [N, head_dim/2] in float32. Pairs are interleaved: element pair
(2k, 2k+1) of a head rotates by angle k. In the 2-D table even pairs follow the column coordinate and odd
pairs the row coordinate; coordinates are resolution-normalised to [0, 16]. Tables are computed on the CPU and
then moved to `device`, so every device uses the same values (a GPU's pow/linspace round differently)."""

from __future__ import annotations

import torch

RopeTable = tuple[torch.Tensor, torch.Tensor]


def _axis_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    exponents = torch.arange(0, head_dim, 4, device="cpu")[: head_dim // 4].float() / head_dim
    return 1.0 / (theta ** exponents)


def ntk_theta(grid: int, ref_grid: int, head_dim: int, theta: float = 10000.0) -> float:
    """NTK-aware base for one axis: θ·(grid/ref)^(d_a/(d_a−2)), d_a = head_dim/2 (Python double)."""
    d_axis = head_dim // 2
    factor = (grid / ref_grid) ** (d_axis / (d_axis - 2)) if d_axis > 2 else 1.0
    return theta * factor


def rope_2d(head_dim: int, grid_h: int, grid_w: int, mode: str = "original",
            ref_grid: tuple[int, int] | None = None, theta: float = 10000.0, span: float = 16.0,
            device=None) -> RopeTable:
    """2-D RoPE table for a grid_h × grid_w token grid (row-major tokens)."""
    if mode == "ntk_aware":
        theta_h = ntk_theta(grid_h, ref_grid[0], head_dim, theta)
        theta_w = ntk_theta(grid_w, ref_grid[1], head_dim, theta)
    elif mode == "original":
        theta_h = theta_w = theta
    else:
        raise ValueError(f"unknown rope mode {mode!r}")
    cpu = torch.device("cpu")
    ys, xs = torch.meshgrid(torch.linspace(0, span, grid_h, device=cpu), torch.linspace(0, span, grid_w, device=cpu),
                            indexing="ij")
    x_angles = torch.outer(xs.reshape(-1), _axis_frequencies(head_dim, theta_w))
    y_angles = torch.outer(ys.reshape(-1), _axis_frequencies(head_dim, theta_h))
    angles = torch.stack([x_angles, y_angles], dim=-1).reshape(grid_h * grid_w, -1)
    return torch.cos(angles).to(device), torch.sin(angles).to(device)


def rope_1d(head_dim: int, length: int, theta: float = 10000.0, device=None) -> RopeTable:
    """1-D RoPE table for integer positions 0..length-1: pair k turns by pos·θ^(−2k/head_dim)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device="cpu").float() / head_dim))
    angles = torch.arange(length, device="cpu").float()[:, None] * freqs[None]
    return torch.cos(angles).to(device), torch.sin(angles).to(device)


def apply_rope(x: torch.Tensor, table: RopeTable) -> torch.Tensor:
    """Rotate x [B, N, heads, head_dim] by a table for N positions; float32 math, result in x's dtype."""
    cos, sin = (t[None, :, None, :] for t in table)
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(3).type_as(x)
