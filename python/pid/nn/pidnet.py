"""PidNet: the PiD pixel-diffusion network, with the reference parameter names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PidConfig
from ..errors import PidError
from ..plan import ExecutionPlan
from ..state_dict import check_state_dict
from .latent_adapter import GateInput, LatentProjection, SigmaGate
from .layers import FinalLayer, PixelEmbedder, TimestepEmbedder, TokenEmbedder, pixel_sincos_axes
from .mmdit import MMDiTBlock
from .modulation import BlockModulation
from .pit import PiTBlock
from .rope import RopeTable, rope_1d, rope_2d

@dataclass
class LatentCondition:
    """Everything that depends only on the latent and its noise level σ, for one output grid."""

    grid: tuple[int, int]  # patch grid (Hs, Ws) it was computed for
    gates: list[GateInput]  # one per injection point (before blocks 0, k, 2k, ... with k = lq_interval)
    pit: Optional[GateInput] = None  # v1.5: the gate in front of the pixel blocks
    sharded: bool = False  # the gates hold one rank's tokens (plan.sequence_parallel), padded


@dataclass
class TimeCondition:
    """Everything that depends only on the timestep: its embedding and every MMDiT block's modulation."""

    t_emb: torch.Tensor  # [B, 1, D], before SiLU
    block_mods: list[BlockModulation]  # per MMDiT block: its image and text streams' modulations ([B, 1, D] each)

    def map(self, fn) -> "TimeCondition":
        return TimeCondition(fn(self.t_emb), [mods.map(fn) for mods in self.block_mods])

    def expand(self, batch: int) -> "TimeCondition":
        """One sample's condition broadcast to `batch` samples (views)."""
        return self.map(lambda t: t.expand(batch, *t.shape[1:]))

    def take(self, start: int, stop: int) -> "TimeCondition":
        """Samples [start, stop) (a data-parallel rank's)."""
        return self.map(lambda t: t[start:stop])


@dataclass
class TextCondition:
    """The embedded caption: tokens entering the first MMDiT block and their RoPE table."""

    tokens: torch.Tensor  # [B, Ltxt, D]
    rope: Optional[RopeTable]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] → patch tokens [B, L, C·p·p], row-major patches, feature ch·p² + py·p + px: what
    F.unfold(kernel=p, stride=p) gives, as a pure reshape."""
    B, C, H, W = x.shape
    return x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(pixels: torch.Tensor) -> torch.Tensor:
    """Per-pixel outputs [B, Hs, Ws, p, p, C] → image [B, C, Hs·p, Ws·p] (the inverse of the pixel grouping;
    F.fold with kernel = stride = p, as a pure reshape)."""
    B, Hs, Ws, p, _, C = pixels.shape
    return pixels.permute(0, 5, 1, 3, 2, 4).reshape(B, C, Hs * p, Ws * p)


def _rows_of(x: torch.Tensor, shard, grid_w: int, p: int) -> tuple[torch.Tensor, int]:
    """The image rows [B, C, rows·p, W] that hold a shard's patches (row-major over a grid_w-wide grid), and the
    first patch row."""
    if shard.real == 0:
        return x[:, :, :0], 0
    row0, row1 = shard.start // grid_w, -(-shard.stop // grid_w)
    return x[:, :, row0 * p:row1 * p], row0


class PidNet(nn.Module):
    """forward(x, t, y, lq_latent, degrade_sigma) → velocity, as the reference; or, to reuse work across
    sampler steps, `encode_condition` + `encode_text` once and `velocity` per step."""

    def __init__(self, config: PidConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        self.y_pos_embedding = nn.Parameter(torch.zeros(1, cfg.txt_max_length, D))
        self.pixel_embedder = PixelEmbedder(cfg.in_channels, cfg.pixel_hidden_size)
        self.s_embedder = TokenEmbedder(cfg.in_channels * cfg.patch_size**2, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = TokenEmbedder(cfg.txt_embed_dim, D, norm=True)
        self.patch_blocks = nn.ModuleList(
            MMDiTBlock(D, cfg.num_heads, cfg.mlp_hidden_size) for _ in range(cfg.patch_depth))
        self.pixel_blocks = nn.ModuleList(
            PiTBlock(cfg.pixel_hidden_size, D, cfg.patch_size, cfg.pixel_attn_hidden_size, cfg.pixel_num_heads)
            for _ in range(cfg.pixel_depth))
        self.final_layer = FinalLayer(cfg.pixel_hidden_size, cfg.in_channels)
        self.lq_proj = LatentProjection(cfg)
        self.pit_lq_gate = SigmaGate(D, cfg.gate_width) if cfg.pit_lq_inject else None
        self._tables: dict[Any, Any] = {}

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any]) -> "PidNet":
        return cls(PidConfig.from_reference_kwargs(kwargs))

    # ------------------------------------------------------------------ cached position tables
    def _cached(self, key, make):
        if key not in self._tables:
            self._tables[key] = make()
        return self._tables[key]

    def image_rope(self, grid_h: int, grid_w: int, device) -> RopeTable:
        cfg = self.config
        return self._cached(("img", grid_h, grid_w, str(device)), lambda: rope_2d(
            cfg.head_dim, grid_h, grid_w, cfg.rope_mode, cfg.rope_ref_grid, device=device))

    def pixel_rope(self, grid_h: int, grid_w: int, device) -> RopeTable:
        cfg = self.config
        return self._cached(("pix", grid_h, grid_w, str(device)), lambda: rope_2d(
            cfg.pixel_head_dim, grid_h, grid_w, cfg.rope_mode, cfg.rope_ref_grid, device=device))

    def text_rope(self, length: int, device) -> Optional[RopeTable]:
        cfg = self.config
        if not cfg.use_text_rope:
            return None
        return self._cached(("txt", length, str(device)),
                            lambda: rope_1d(cfg.head_dim, length, cfg.text_rope_theta, device=device))

    def pixel_table(self, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cached(("sincos", height, width, str(device)),
                            lambda: pixel_sincos_axes(height, width, self.config.pixel_hidden_size, device))

    # ------------------------------------------------------------------ once per decode
    # Every entry point runs under `plan` (default: ExecutionPlan(), float32 with pid's kernels), in its autocast.
    def encode_condition(self, lq_latent: torch.Tensor, degrade_sigma: torch.Tensor, grid: tuple[int, int], *,
                         plan: Optional[ExecutionPlan] = None) -> LatentCondition:
        """Latent [B, C, h, w] and σ [B] → the gate inputs for a patch grid (Hs, Ws)."""
        plan = plan or ExecutionPlan()
        lq = self.lq_proj
        sp = plan.sequence_parallel
        with plan.autocast(lq_latent.device.type):
            tokens = lq.trunk(lq_latent, *grid, plan=plan)
            if sp is not None:  # the CNN needs the whole latent; its features are per token from here on
                tokens = sp.take(tokens, sp.shard(grid[0] * grid[1]))
            keep = plan.keep_gate_features
            gates = [gate.prepare(tokens, head, degrade_sigma, keep) for head, gate in zip(lq.output_heads,
                                                                                            lq.gate_modules)]
            pit = (self.pit_lq_gate.prepare(tokens, lq.pit_head, degrade_sigma, keep)
                   if self.pit_lq_gate is not None else None)
        return LatentCondition(tuple(grid), gates, pit, sharded=sp is not None)

    def encode_text(self, y: torch.Tensor, *, plan: Optional[ExecutionPlan] = None) -> TextCondition:
        """Caption embeddings [B, Ltxt, txt_embed_dim] → text tokens; rows past txt_max_length are dropped."""
        plan = plan or ExecutionPlan()
        n = min(y.shape[1], self.config.txt_max_length)
        with plan.autocast(y.device.type):
            tokens = self.y_embedder(y[:, :n])
            tokens = tokens + self.y_pos_embedding[:, :n].to(tokens.dtype)
        return TextCondition(tokens, self.text_rope(n, y.device))

    def encode_time(self, t: torch.Tensor, *, plan: Optional[ExecutionPlan] = None) -> TimeCondition:
        """Network time t [B] (flow time × 1000) → the timestep embedding and all block modulations."""
        plan = plan or ExecutionPlan()
        with plan.autocast(t.device.type):
            t_emb = self.t_embedder(t).view(t.numel(), 1, self.config.hidden_size)
            c = F.silu(t_emb)
            return TimeCondition(t_emb, [block.modulation(c) for block in self.patch_blocks])

    # ------------------------------------------------------------------ once per step
    def velocity(self, x: torch.Tensor, t: "torch.Tensor | TimeCondition", text: TextCondition,
                 cond: Optional[LatentCondition] = None, *, plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        """Velocity for x [B, 3, H, W] at network time t [B] (flow time × 1000), or its `encode_time`."""
        plan = plan or ExecutionPlan()
        cfg = self.config
        B, _, H, W = x.shape
        p = cfg.patch_size
        Hs, Ws = H // p, W // p
        if cond is not None and tuple(cond.grid) != (Hs, Ws):
            raise PidError(f"the latent condition was computed for a {cond.grid} patch grid, but x "
                             f"{H}x{W} has a {(Hs, Ws)} grid; call encode_condition with grid={(Hs, Ws)}")
        sp = plan.sequence_parallel
        if cond is not None and cond.sharded != (sp is not None):
            raise PidError("the latent condition and this call must both be sequence-parallel or both not: call "
                           "encode_condition with the same plan")
        shard = sp.shard(Hs * Ws) if sp is not None else None
        time = t if isinstance(t, TimeCondition) else self.encode_time(t, plan=plan)
        img_rope = self.image_rope(Hs, Ws, x.device)
        with plan.autocast(x.device.type):
            # With sequence parallelism: this rank's patches only (the image rows that hold them).
            x_rows, row0 = (x, 0) if shard is None else _rows_of(x, shard, Ws, p)
            s = self.s_embedder(patchify(x_rows, p))
            if shard is not None:
                s = sp.take(s, shard, first=row0 * Ws)
            y = text.tokens
            last = cfg.patch_depth - 1
            for i, block in enumerate(self.patch_blocks):
                if cond is not None and i % cfg.lq_interval == 0:
                    gate_idx = i // cfg.lq_interval
                    s = self.lq_proj.gate_modules[gate_idx](s, cond.gates[gate_idx], plan=plan)
                s, y = block(s, y, time.block_mods[i], img_rope, text.rope, plan=plan, text_out=i != last,
                             grid=(Hs, Ws))

            s = F.silu(time.t_emb + s)
            if cond is not None and cond.pit is not None:
                s = self.pit_lq_gate(s, cond.pit, plan=plan)
            n = s.shape[1]  # this process's patches per sample
            s_cond = s.reshape(B * n, cfg.hidden_size)

            cols, rows = self.pixel_table(H, W, x.device)
            pixels = self.pixel_embedder(x_rows, p, (cols, rows[row0 * p:row0 * p + x_rows.shape[2]]))
            if shard is not None:
                count = x_rows.shape[2] // p * Ws  # patches in those rows
                pixels = sp.take(pixels.view(B, count, p * p, pixels.shape[-1]), shard, first=row0 * Ws)
                pixels = pixels.reshape(B * n, p * p, -1)
            pix_rope = self.pixel_rope(Hs, Ws, x.device)
            for block in self.pixel_blocks:
                pixels = block(pixels, s_cond, B, pix_rope, plan=plan, grid=(Hs, Ws))
            chunk = plan.pixel_chunk
            if chunk is None:
                out = self.final_layer(pixels)  # [B·n, p², 3]
            else:
                out = torch.cat([self.final_layer(pixels[i:i + chunk]) for i in range(0, pixels.shape[0], chunk)])
        if shard is not None:
            out = sp.gather_tokens(out.view(B, n, -1), shard)
        return unpatchify(out.view(B, Hs, Ws, p, p, cfg.in_channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, lq_latent: Optional[torch.Tensor] = None,
                degrade_sigma: Optional[torch.Tensor | float] = None, *,
                plan: Optional[ExecutionPlan] = None) -> torch.Tensor:
        """The reference signature: x [B, 3, H, W], t [B] (flow time × 1000), y [B, Ltxt, txt_embed_dim],
        lq_latent [B, C, h, w] (normalised latent), degrade_sigma [B] (or a float) → velocity [B, 3, H, W]."""
        B, _, H, W = self._check_inputs(x, t, y, lq_latent)
        cond = None
        if lq_latent is not None:
            sigma = self.sigma_per_sample(degrade_sigma, B, x.device)
            grid = (H // self.config.patch_size, W // self.config.patch_size)
            cond = self.encode_condition(lq_latent, sigma, grid, plan=plan)
        return self.velocity(x, t.reshape(B), self.encode_text(y, plan=plan), cond, plan=plan)

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, x, t, y, lq_latent):
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise PidError(f"x must be [B, {cfg.in_channels}, H, W], got {tuple(x.shape)}")
        B, _, H, W = x.shape
        if H % cfg.patch_size or W % cfg.patch_size:
            raise PidError(f"image size {H}x{W} is not a multiple of the patch size {cfg.patch_size}; "
                             f"use a size such as {H // cfg.patch_size * cfg.patch_size or cfg.patch_size}x"
                             f"{W // cfg.patch_size * cfg.patch_size or cfg.patch_size}")
        if t.numel() != B:
            raise PidError(f"t must hold one time per sample ([{B}]), got shape {tuple(t.shape)}")
        if y.ndim != 3 or y.shape[0] != B or y.shape[2] != cfg.txt_embed_dim:
            raise PidError(f"y must be [{B}, Ltxt, {cfg.txt_embed_dim}] caption embeddings, got {tuple(y.shape)}")
        if lq_latent is not None and (lq_latent.ndim != 4 or lq_latent.shape[0] != B
                                      or lq_latent.shape[1] != cfg.lq_latent_channels):
            raise PidError(f"lq_latent must be [{B}, {cfg.lq_latent_channels}, h, w] for this network, got "
                             f"{tuple(lq_latent.shape)}")
        return B, _, H, W

    @staticmethod
    def sigma_per_sample(degrade_sigma, batch: int, device) -> torch.Tensor:
        """A float, a sequence or a tensor of noise levels → float32 [batch] (one value broadcasts)."""
        if degrade_sigma is None:
            raise PidError("degrade_sigma is required with lq_latent: pass 0.0 for a clean latent, or the "
                             "noise level of a partially denoised one")
        sigma = torch.as_tensor(degrade_sigma, dtype=torch.float32).reshape(-1).to(device)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch).contiguous()
        if sigma.numel() != batch:
            raise PidError(f"degrade_sigma must be a float or hold one value per sample ({batch}), "
                             f"got {sigma.numel()} values")
        return sigma

    # ------------------------------------------------------------------ weights
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load reference-named weights. Strict: every parameter must be present with its shape; only the
        documented unused keys (the training-only aux RGB head) may be extra. Errors list the keys."""
        state_dict = check_state_dict(state_dict, self, strict=strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
