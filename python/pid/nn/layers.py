"""Small building blocks shared by the PiD network: norms, feed-forwards, embedders."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..ops import reference
from ..plan import ExecutionPlan
from .modulation import AdaLN, PixelChunks, PixelModulation


class RMSNorm(nn.Module):
    """RMSNorm with the reference numerics: statistics in float32, the normalised value cast back to the
    input dtype, then multiplied by the weight in float32 (the reference keeps float32 weights; bf16 weights
    hold the same values), which promotes the result to float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.rms_norm(x, self.weight, self.eps)


def group_norm_split(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """F.group_norm computed in float32 from a split reduction (torch.var_mean) and one affine pass; returns
    float32. On CUDA, torch's group_norm gives each (sample, group) one thread block, so the latent CNN's 4 groups
    of a [1, 1024, 128, 128] map run on 4 of 132 SMs: 3.3 ms a call at 2048², which this brings to ~0.1 ms."""
    B, C = x.shape[:2]
    xg = x.float().reshape(B, groups, -1)
    var, mean = torch.var_mean(xg, dim=-1, keepdim=True, correction=0)
    y = ((xg - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, C) + (1,) * (x.dim() - 2)
    return torch.addcmul(bias.float().reshape(shape), y, weight.float().reshape(shape))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and keys); on CUDA with the plan's fused norms (the fast regime) it computes
    through `group_norm_split`, with F.group_norm's output dtype (float32 under autocast, else x's)."""

    def forward(self, x: torch.Tensor, *, plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        plan = plan or ExecutionPlan()
        if not (x.is_cuda and plan.fused_norm):
            return super().forward(x)
        y = group_norm_split(x, self.num_groups, self.weight, self.bias, self.eps)
        return y if plan.autocast_dtype is not None else y.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x·(1 + scale) + shift."""
    return reference.modulate(x, shift, scale)


# ---- the blocks' norm / modulation / gated residual: fused pid.ops kernels or the reference expressions --------
# With plan.fused_norm (the fast regime) the blocks call the fused ops, which round every step as the reference
# does; outputs differ from the reference expressions only through the order of RMSNorm's float32 sum of squares
# (tested in tests/test_nn_fused_norm.py). Forward hooks on the norm modules do not fire on the fused path.
# Under autocast the fused ops write the dtype the next Linear computes in (bfloat16): the same values autocast
# would have cast their float32 result to.


def norm_modulate(norm: RMSNorm, x: torch.Tensor, mod: AdaLN, *, plan: ExecutionPlan) -> torch.Tensor:
    """``modulate(norm(x), mod.shift, mod.scale)`` for x [B, L, D], shift/scale [B, 1, D] (MMDiT)."""
    if plan.fused_norm:
        return ops.rms_norm_modulate(x, norm.weight.float(), mod.shift, mod.scale, norm.eps, plan.autocast_dtype,
                                     use_kernel=plan.kernels)
    return modulate(norm(x), mod.shift, mod.scale)


def norm_modulate_pixels(norm: RMSNorm, x: torch.Tensor, mods: PixelModulation, chunks: PixelChunks, *,
                         plan: ExecutionPlan) -> torch.Tensor:
    """``modulate(norm(x), shift, scale).reshape(N, P·c)`` for pixel tokens x [N, P, c], with the shift and scale
    of `chunks` (`PixelModulation.ATTENTION` or `.MLP`) of the per-pixel modulation [N, P, 6c] (PiT)."""
    if plan.fused_norm:
        return ops.rms_norm_modulate_pixels(x, norm.weight.float(), mods.table, chunks.shift, chunks.scale, norm.eps,
                                            plan.autocast_dtype, use_kernel=plan.kernels)
    N, P, c = x.shape
    return modulate(norm(x), mods.chunk(chunks.shift), mods.chunk(chunks.scale)).reshape(N, P * c)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, *, plan: ExecutionPlan) -> torch.Tensor:
    """``x + gate · y``: the residual update of the blocks (gate [B, 1, D] or a per-pixel chunk view)."""
    # The op returns x's dtype; use it only where the expression's promoted dtype is x's (always in PiD).
    if plan.fused_norm and torch.promote_types(x.dtype, torch.promote_types(gate.dtype, y.dtype)) == x.dtype:
        return ops.gated_residual(x, gate, y, use_kernel=plan.kernels)
    return x + gate * y


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
        # f_k on the CPU, copied once per device (not a buffer: .bfloat16() must not round them). t·f_k reaches
        # 1000 rad, so one ulp of a GPU's expf moves the output by ~1e-5 (measured on the golden networks); CPU
        # float32 is what the reference's golden run computed.
        half = freq_dim // 2
        cpu = torch.device("cpu")  # explicit: nets are built under torch.device("meta") by pid.load
        self._freqs = {cpu: torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=cpu)
                                      / half)}

    def frequencies(self, t: torch.Tensor) -> torch.Tensor:
        if t.device not in self._freqs:
            self._freqs[t.device] = self._freqs[torch.device("cpu")].to(t.device)
        freqs = self._freqs[t.device]
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
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64, device="cpu") / quarter))

    def encode(n: int) -> torch.Tensor:  # on the CPU, like every position table (device-independent values)
        angles = torch.arange(n, dtype=torch.float64, device="cpu")[:, None] * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(device)

    return encode(width), encode(height)


def pixel_sincos_table(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """The full table [H·W, dim] (row-major pixels) that the reference adds; pid adds the axes instead."""
    cols, rows = pixel_sincos_axes(height, width, dim, device)
    return torch.cat([cols[None].expand(height, -1, -1), rows[:, None].expand(-1, width, -1)], dim=-1).reshape(
        height * width, dim)


class PixelEmbedder(nn.Module):
    """Per-pixel Linear(3 → c) plus the full-image sin/cos table, regrouped into patches [B·L, p², c]. The
    table is added per axis (same values as adding the [H·W, c] table, which is never built)."""

    ROWS_PER_PASS = 8  # patch rows embedded at a time: the output is the only pixel-stream-sized tensor made

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)
        self.dim = dim

    def forward(self, x: torch.Tensor, patch_size: int, axes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, C, H, W = x.shape
        p, half = patch_size, self.dim // 2
        Hs, Ws = H // p, W // p
        cols, rows = axes
        out = None
        for r0 in range(0, Hs, self.ROWS_PER_PASS):
            r1 = min(Hs, r0 + self.ROWS_PER_PASS)
            band = x[:, :, r0 * p:r1 * p].reshape(B, C, r1 - r0, p, Ws, p).permute(0, 2, 4, 3, 5, 1)
            tokens = self.proj(band)  # [B, rows, Ws, p, p, c] in patch order, a fresh tensor: safe to add in place
            tokens[..., :half] += cols.to(tokens.dtype).view(Ws, 1, p, half)
            tokens[..., half:] += rows[r0 * p:r1 * p].to(tokens.dtype).view(r1 - r0, 1, p, 1, half)
            if out is None:
                out = tokens.new_empty(B, Hs, Ws, p, p, self.dim)
            out[:, r0:r1] = tokens
        if out is None:  # no rows (a sequence-parallel rank without patches): empty, in the dtype proj gives
            return self.proj(x.new_zeros(0, p * p, C))
        return out.view(B * Hs * Ws, p * p, self.dim)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))
