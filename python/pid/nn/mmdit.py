"""MMDiT joint text/image block: the patch-level blocks of PiD (14 in the released networks)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from ..plan import ExecutionPlan
from .layers import RMSNorm, SwiGLU, gated_residual, norm_modulate
from .modulation import BlockModulation, StreamModulation
from .rope import RopeTable


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] → [B, N, H·d] (a view when x is laid out [B, N, H, d], as pid.ops.attention returns)."""
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)


class JointAttention(nn.Module):
    """Attention over [text tokens, image tokens] with separate projections and q/k norms per stream.

    The plan's ``window`` (None: global attention, the trained model) switches the image queries to windowed
    attention over the patch grid (``pid.ops.attention``): an opt-in speed/memory mode that changes the
    network's function; a window covering the grid is exactly global attention."""

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

    def forward(self, x: torch.Tensor, y: torch.Tensor, img_rope: RopeTable, txt_rope: Optional[RopeTable], *,
                plan: Optional[ExecutionPlan] = None, text_out: bool = True,
                grid: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [B, L, D] image tokens (row-major ``grid``, needed for windowed attention and sequence parallelism; with
        ``plan.sequence_parallel`` x holds this rank's slice of them), y [B, Ltxt, D]."""
        plan = plan or ExecutionPlan()
        B, L, D = x.shape
        n_txt, H = y.shape[1], self.heads
        d = D // H
        qkv_y = self.qkv_y(y).view(B, n_txt, 3, H, d)
        sp = plan.sequence_parallel
        # plan.token_chunk: the image tokens' q/k/v projection chunk by chunk, straight into the joint buffers (the
        # whole [B, L, 3D] projection never exists). Not with sequence parallelism, whose all-to-all takes it whole.
        chunked = sp is None and plan.token_chunk is not None and plan.token_chunk < L
        chunk = plan.token_chunk if chunked else L
        qkv_x = self.qkv_x(x[:, :chunk]).view(B, -1, 3, H, d)
        if sp is not None:  # x holds this rank's image tokens: attend over all of them with this rank's heads
            shard = sp.shard(grid[0] * grid[1])
            qkv_x = sp.sequence_to_heads(qkv_x, shard)
            qkv_y = qkv_y[:, :, :, sp.heads(H)]
            B, L, _, H, d = qkv_x.shape
        # q, k, v of the joint sequence [text, image] in the dtype attention computes in: the autocast dtype, else
        # the reference's promoted one.
        dtype = plan.autocast_dtype or torch.promote_types(torch.promote_types(qkv_x.dtype, qkv_y.dtype),
                                                           self.q_norm_x.weight.dtype)
        k = x.new_empty(B, H, n_txt + L, d, dtype=dtype)
        # Without text output (the last block) only the image queries are needed.
        q = x.new_empty(B, H, n_txt + L if text_out else L, d, dtype=dtype)
        ops.qk_norm_rope(qkv_y, self.q_norm_y.weight, self.k_norm_y.weight, txt_rope, self.k_norm_y.eps,
                         out=(q if text_out else None, k), offsets=(0, 0), use_kernel=plan.kernels)
        q_offset = n_txt if text_out else 0
        if not chunked:
            ops.qk_norm_rope(qkv_x, self.q_norm_x.weight, self.k_norm_x.weight, img_rope, self.k_norm_x.eps,
                             out=(q, k), offsets=(q_offset, n_txt), use_kernel=plan.kernels)
            v = torch.cat([qkv_y[:, :, 2], qkv_x[:, :, 2]], dim=1).to(dtype).transpose(1, 2)  # [B, H, S, d]
        else:
            v_rows = x.new_empty(B, n_txt + L, H, d, dtype=dtype)  # the layout the line above makes
            v_rows[:, :n_txt] = qkv_y[:, :, 2]
            for i in range(0, L, chunk):
                if i:
                    qkv_x = self.qkv_x(x[:, i:i + chunk]).view(B, -1, 3, H, d)
                n = qkv_x.shape[1]
                rope = None if img_rope is None else (img_rope[0][i:i + n], img_rope[1][i:i + n])
                ops.qk_norm_rope(qkv_x, self.q_norm_x.weight, self.k_norm_x.weight, rope, self.k_norm_x.eps,
                                 out=(q, k), offsets=(q_offset + i, n_txt + i), use_kernel=plan.kernels)
                v_rows[:, n_txt + i:n_txt + i + n] = qkv_x[:, :, 2]
            del qkv_x
            v = v_rows.transpose(1, 2)
        out = ops.attention(q, k, v, window=plan.window, grid=grid, n_text=n_txt, backend=plan.attention,
                            autotune=plan.autotune, use_kernel=plan.kernels)
        if sp is not None:
            image = sp.heads_to_sequence(out[:, :, n_txt:] if text_out else out, shard)
            return self.proj_x(image), self.proj_y(sp.gather_heads(out[:, :, :n_txt])) if text_out else None
        if not text_out:
            return self.proj_x(_merge_heads(out)), None
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

    def modulation(self, c: torch.Tensor) -> BlockModulation:
        """The image and text streams' modulations (views of [B, 1, 6D] vectors); they depend only on the timestep."""
        return BlockModulation(StreamModulation.split(self.adaLN_modulation_img(c)),
                               StreamModulation.split(self.adaLN_modulation_txt(c)))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mods: BlockModulation, img_rope: RopeTable,
                txt_rope: Optional[RopeTable], *, plan: Optional[ExecutionPlan] = None, text_out: bool = True,
                grid: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [B, L, D] image tokens (a row-major ``grid``), y [B, Ltxt, D] text tokens, `mods` = modulation(c) of
        the timestep (computed once per timestep by PidNet.encode_time). With text_out=False (the last block, whose
        text stream nothing reads) the text stream's own update is skipped and None returned. With the plan's
        `token_chunk` the image tokens' per-token work runs chunk by chunk and x is updated in place."""
        plan = plan or ExecutionPlan()
        img, txt = mods
        attn_x, attn_y = self.attn(norm_modulate(self.norm_x1, x, img.attention, plan=plan),
                                   norm_modulate(self.norm_y1, y, txt.attention, plan=plan), img_rope, txt_rope,
                                   plan=plan, text_out=text_out, grid=grid)
        chunk = plan.token_chunk
        if chunk is None or chunk >= x.shape[1]:
            x = gated_residual(x, img.attention.gate, attn_x, plan=plan)
            x = gated_residual(x, img.mlp.gate, self.mlp_x(norm_modulate(self.norm_x2, x, img.mlp, plan=plan)),
                               plan=plan)
        else:
            # Chunks of tokens through the residual updates and the feed-forward (its [B, L, 3·hidden] working set
            # bounded to a chunk); x is updated in place (without autograd), as PiTBlock does with pixel chunks.
            x = x if not torch.is_grad_enabled() else x.clone()
            for i in range(0, x.shape[1], chunk):
                xi = x[:, i:i + chunk].contiguous()
                xi = gated_residual(xi, img.attention.gate, attn_x[:, i:i + chunk], plan=plan)
                x[:, i:i + chunk] = gated_residual(
                    xi, img.mlp.gate, self.mlp_x(norm_modulate(self.norm_x2, xi, img.mlp, plan=plan)), plan=plan)
            del attn_x
        if not text_out:
            return x, None
        y = gated_residual(y, txt.attention.gate, attn_y, plan=plan)
        y = gated_residual(y, txt.mlp.gate, self.mlp_y(norm_modulate(self.norm_y2, y, txt.mlp, plan=plan)), plan=plan)
        return x, y
