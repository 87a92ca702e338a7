"""PiT pixel blocks: per-pixel tokens modulated by their patch, attention across patches."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from ..plan import ExecutionPlan
from .layers import PixelMLP, RMSNorm, gated_residual, norm_modulate_pixels
from .mmdit import _merge_heads
from .modulation import PixelModulation
from .rope import RopeTable


class PatchAttention(nn.Module):
    """Self-attention across the patch tokens of one image with q/k RMSNorm and 2-D RoPE.

    The plan's ``pixel_window`` (None: global attention, the trained model): opt-in windowed attention over the
    patch grid (``pid.ops.attention``), which changes the network's function; see JointAttention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTable, *, plan: Optional[ExecutionPlan] = None,
                grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        plan = plan or ExecutionPlan()
        B, L, D = x.shape
        H = self.heads
        qkv = self.qkv(x).view(B, L, 3, H, D // H)
        sp = plan.sequence_parallel
        if sp is not None:  # x holds this rank's patches: attend over all of them with this rank's heads
            shard = sp.shard(grid[0] * grid[1])
            qkv = sp.sequence_to_heads(qkv, shard)
        dtype = plan.autocast_dtype or torch.promote_types(qkv.dtype, self.q_norm.weight.dtype)
        q, k = ops.qk_norm_rope(qkv, self.q_norm.weight, self.k_norm.weight, rope, self.k_norm.eps, out_dtype=dtype,
                                use_kernel=plan.kernels)
        v = qkv[:, :, 2].transpose(1, 2).to(dtype)  # [B, H, L, d], a strided view when no cast is needed
        out = ops.attention(q, k, v, window=plan.pixel_window, grid=grid, backend=plan.attention,
                            autotune=plan.autotune, use_kernel=plan.kernels)
        return self.proj(_merge_heads(out) if sp is None else sp.heads_to_sequence(out, shard))


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

    def forward(self, x: torch.Tensor, s_cond: torch.Tensor, batch: int, rope: RopeTable, *,
                plan: Optional[ExecutionPlan] = None, grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """The plan's `pixel_chunk` bounds memory: the per-pixel work (adaLN linear, modulation, compress; expand,
        gated residual, MLP) runs on `pixel_chunk` patches at a time, recomputing the adaLN output in the second
        phase instead of keeping it, and the block updates x in place. Only the attention sees all patches (a
        row-major `grid` of them, needed by windowed attention)."""
        plan = plan or ExecutionPlan()
        BL, chunk = x.shape[0], plan.pixel_chunk
        if chunk is None or chunk >= BL:
            mods = self.modulation(s_cond)
            h = self._compress(x, mods, plan)
            return self._expand_mlp(x, mods, self._attend(h, batch, rope, plan, grid), plan)
        h = torch.cat([self._compress(x[i:i + chunk], self.modulation(s_cond[i:i + chunk]), plan)
                       for i in range(0, BL, chunk)])
        h = self._attend(h, batch, rope, plan, grid)
        out = x if not torch.is_grad_enabled() else torch.empty_like(x)
        for i in range(0, BL, chunk):
            out[i:i + chunk] = self._expand_mlp(x[i:i + chunk], self.modulation(s_cond[i:i + chunk]), h[i:i + chunk],
                                                plan)
        return out

    def modulation(self, s_cond: torch.Tensor) -> PixelModulation:
        """The per-pixel modulation of n patches from their conditioning [n, D]: the adaLN Linear's output feature o
        is (pixel o // 6c, chunk (o % 6c) // c, channel o % c)."""
        n, c = s_cond.shape[0], self.pixel_dim
        return PixelModulation(self.adaLN_modulation(s_cond).view(n, -1, 6 * c), c)

    def _compress(self, x: torch.Tensor, mods: PixelModulation, plan: ExecutionPlan) -> torch.Tensor:
        modulated = norm_modulate_pixels(self.norm1, x, mods, PixelModulation.ATTENTION, plan=plan)  # [n, P2·c]
        return self.compress_to_attn(modulated)  # [n, A]

    def _attend(self, h: torch.Tensor, batch: int, rope: RopeTable, plan: ExecutionPlan, grid) -> torch.Tensor:
        BL = h.shape[0]
        return self.attn(h.view(batch, BL // batch, self.attn_dim), rope, plan=plan, grid=grid).reshape(BL,
                                                                                                      self.attn_dim)

    def _expand_mlp(self, x: torch.Tensor, mods: PixelModulation, h: torch.Tensor,
                    plan: ExecutionPlan) -> torch.Tensor:
        attention, mlp = PixelModulation.ATTENTION, PixelModulation.MLP
        x = gated_residual(x, mods.chunk(attention.gate), self.expand_from_attn(h).view(x.shape), plan=plan)
        mlp_in = norm_modulate_pixels(self.norm2, x, mods, mlp, plan=plan).view(x.shape)
        return gated_residual(x, mods.chunk(mlp.gate), self.mlp(mlp_in), plan=plan)
