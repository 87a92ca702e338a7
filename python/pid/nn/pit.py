"""PiT pixel blocks (spec §2.11): per-pixel tokens modulated by their patch, attention across patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import PixelMLP, RMSNorm, gated_residual, norm_modulate_pixels
from .mmdit import _merge_heads, _split_heads, _to_sdpa
from .rope import RopeTable, apply_rope


class PatchAttention(nn.Module):
    """Self-attention across the patch tokens of one image with q/k RMSNorm and 2-D RoPE."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        q, k, v = _split_heads(self.qkv(x), self.heads)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(_to_sdpa(q), _to_sdpa(k), _to_sdpa(v))))


class PiTBlock(nn.Module):
    """x [B·L, p², c] pixel tokens; s_cond [B·L, D] patch conditioning (per-pixel adaLN)."""

    def __init__(self, pixel_dim: int, patch_dim: int, patch_size: int, attn_dim: int, attn_heads: int):
        super().__init__()
        p2 = patch_size * patch_size
        self.pixel_dim = pixel_dim
        self.attn_dim = attn_dim
        self.compress_to_attn = nn.Linear(p2 * pixel_dim, attn_dim)
        self.expand_from_attn = nn.Linear(attn_dim, p2 * pixel_dim)
        self.norm1 = RMSNorm(pixel_dim)
        self.attn = PatchAttention(attn_dim, attn_heads)
        self.norm2 = RMSNorm(pixel_dim)
        self.mlp = PixelMLP(pixel_dim, 4 * pixel_dim)
        self.adaLN_modulation = nn.Sequential(nn.Linear(patch_dim, 6 * pixel_dim * p2))

    def forward(self, x: torch.Tensor, s_cond: torch.Tensor, batch: int, rope: RopeTable) -> torch.Tensor:
        BL, P2, c = x.shape
        # Output feature o of the adaLN linear → (pixel o // 6c, chunk (o % 6c) // c, channel o % c).
        mods = self.adaLN_modulation(s_cond).view(BL, P2, 6 * c)
        # Chunks of mods: 0 shift1, 1 scale1, 2 gate1, 3 shift2, 4 scale2, 5 gate2 (read in place).
        gate1, gate2 = mods[..., 2 * c:3 * c], mods[..., 5 * c:6 * c]
        h = norm_modulate_pixels(self.norm1, x, mods, 0, 1)  # [BL, P2·c]
        h = self.compress_to_attn(h).view(batch, BL // batch, self.attn_dim)
        h = self.attn(h, rope)
        h = self.expand_from_attn(h.reshape(BL, self.attn_dim)).view(BL, P2, c)
        x = gated_residual(x, gate1, h)
        return gated_residual(x, gate2, self.mlp(norm_modulate_pixels(self.norm2, x, mods, 3, 4).view(BL, P2, c)))
