"""FLOPs of a forward and of a whole decode (matrix products and attention; a multiply-add is 2 FLOP)."""

from __future__ import annotations

from dataclasses import dataclass

from .captions.gemma import TXT_LEN
from .config import PidConfig

TEXT_TOKENS = TXT_LEN  # caption tokens a decode attends to (BOS + 299)


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one network forward, split by what they depend on."""

    latent_only: float  # LQ CNN, heads, the latent half of every gate: once per decode when hoisted
    per_step: float  # everything that depends on x_t

    @property
    def total(self) -> float:
        return self.latent_only + self.per_step


def forward_flops(cfg: PidConfig, height: int, width: int, txt_len: int = TEXT_TOKENS) -> ForwardFlops:
    """Matrix-product and attention FLOPs of one forward at an output of height × width (batch 1)."""
    p2 = cfg.patch_size**2
    L = (height // cfg.patch_size) * (width // cfg.patch_size)
    D, Hm, A, c = cfg.hidden_size, cfg.mlp_hidden_size, cfg.pixel_attn_hidden_size, cfg.pixel_hidden_size
    Hd, S = cfg.lq_hidden_dim, L + txt_len
    mmdit = cfg.patch_depth * (
        2 * L * (3 * D * D + D * D + 3 * D * Hm)  # image qkv, proj, SwiGLU
        + 2 * txt_len * (3 * D * D + D * D + 3 * D * Hm)  # text linears
        + 4 * S * S * D)  # joint attention: QKᵀ and AV
    pit = cfg.pixel_depth * (
        2 * L * D * 6 * c * p2  # per-pixel adaLN linear
        + 2 * 2 * L * p2 * c * A  # compress + expand
        + 2 * L * 4 * A * A  # qkv + proj
        + 4 * L * L * A  # attention
        + 2 * L * p2 * 2 * c * 4 * c)  # MLP
    embed = 2 * L * cfg.in_channels * p2 * D + 2 * txt_len * cfg.txt_embed_dim * D + 2 * 2 * height * width * 3 * c
    n_heads = cfg.num_gates + (1 if cfg.pit_lq_inject else 0)
    n_convs = 1 + 2 * cfg.lq_num_res_blocks
    trunk = 2 * 9 * L * Hd * (cfg.latent_conv_in_channels + n_convs * Hd)
    heads = 2 * L * Hd * D * n_heads
    gate_half = 2 * L * D * cfg.gate_width * n_heads  # each gate's Linear(2D → G) is two halves
    return ForwardFlops(latent_only=trunk + heads + gate_half, per_step=mmdit + pit + embed + gate_half)


def decode_flops(cfg: PidConfig, height: int, width: int, steps: int = 4, txt_len: int = TEXT_TOKENS,
                 guidance: bool = False) -> float:
    """FLOPs of a whole decode with the latent-only work done once (pid's hoisted schedule)."""
    f = forward_flops(cfg, height, width, txt_len)
    return f.latent_only + steps * (2 if guidance else 1) * f.per_step
