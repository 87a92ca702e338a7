"""MMDiT joint text/image block: the 14 patch-level blocks of PiD (spec §2.8)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, SwiGLU, gated_residual, norm_modulate
from .rope import RopeTable, apply_rope


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, N, 3·D] → q, k, v of shape [B, N, heads, head_dim] (feature f → (f // D, head, dim))."""
    B, N, three_d = qkv.shape
    q, k, v = qkv.view(B, N, 3, heads, three_d // (3 * heads)).unbind(2)
    return q, k, v


def _to_sdpa(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # [B, N, H, d] → [B, H, N, d]


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)


class JointAttention(nn.Module):
    """Attention over [text tokens, image tokens] with separate projections and q/k norms per stream."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.qkv_x = nn.Linear(dim, 3 * dim, bias=False)
        self.qkv_y = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm_x = RMSNorm(head_dim)
        self.k_norm_x = RMSNorm(head_dim)
        self.q_norm_y = RMSNorm(head_dim)
        self.k_norm_y = RMSNorm(head_dim)
        self.proj_x = nn.Linear(dim, dim)
        self.proj_y = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, img_rope: RopeTable, txt_rope: Optional[RopeTable],
                text_out: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        qx, kx, vx = _split_heads(self.qkv_x(x), self.heads)
        qy, ky, vy = _split_heads(self.qkv_y(y), self.heads)
        qx, kx = apply_rope(self.q_norm_x(qx), img_rope), apply_rope(self.k_norm_x(kx), img_rope)
        ky = self.k_norm_y(ky)
        if txt_rope is not None:
            ky = apply_rope(ky, txt_rope)
        k = torch.cat([_to_sdpa(ky), _to_sdpa(kx)], dim=2)
        v = torch.cat([_to_sdpa(vy), _to_sdpa(vx)], dim=2)
        if not text_out:
            # Only image queries are needed: text rows of the joint attention would be discarded.
            return self.proj_x(_merge_heads(F.scaled_dot_product_attention(_to_sdpa(qx), k, v))), None
        qy = self.q_norm_y(qy)
        if txt_rope is not None:
            qy = apply_rope(qy, txt_rope)
        out = F.scaled_dot_product_attention(torch.cat([_to_sdpa(qy), _to_sdpa(qx)], dim=2), k, v)
        n_txt = y.shape[1]
        return self.proj_x(_merge_heads(out[:, :, n_txt:])), self.proj_y(_merge_heads(out[:, :, :n_txt]))


class MMDiTBlock(nn.Module):
    """Joint attention + SwiGLU per stream, adaLN-modulated by c = SiLU(t_emb)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm_x1 = RMSNorm(dim)
        self.norm_y1 = RMSNorm(dim)
        self.attn = JointAttention(dim, heads)
        self.norm_x2 = RMSNorm(dim)
        self.norm_y2 = RMSNorm(dim)
        self.mlp_x = SwiGLU(dim, mlp_hidden)
        self.mlp_y = SwiGLU(dim, mlp_hidden)
        self.adaLN_modulation_img = nn.Sequential(nn.Linear(dim, 6 * dim))
        self.adaLN_modulation_txt = nn.Sequential(nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, img_rope: RopeTable,
                txt_rope: Optional[RopeTable], text_out: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [B, L, D] image tokens, y [B, Ltxt, D] text tokens, c [B, 1, D]. With text_out=False (the last
        block, whose text stream nothing reads) the text stream's own update is skipped and None returned."""
        shift_x, scale_x, gate_x, shift_x2, scale_x2, gate_x2 = self.adaLN_modulation_img(c).chunk(6, dim=-1)
        shift_y, scale_y, gate_y, shift_y2, scale_y2, gate_y2 = self.adaLN_modulation_txt(c).chunk(6, dim=-1)
        attn_x, attn_y = self.attn(norm_modulate(self.norm_x1, x, shift_x, scale_x),
                                   norm_modulate(self.norm_y1, y, shift_y, scale_y), img_rope, txt_rope, text_out)
        x = gated_residual(x, gate_x, attn_x)
        x = gated_residual(x, gate_x2, self.mlp_x(norm_modulate(self.norm_x2, x, shift_x2, scale_x2)))
        if not text_out:
            return x, None
        y = gated_residual(y, gate_y, attn_y)
        y = gated_residual(y, gate_y2, self.mlp_y(norm_modulate(self.norm_y2, y, shift_y2, scale_y2)))
        return x, y
