"""The representation-autoencoder latent spaces: DINOv2-B (per-position statistics) and SigLIP-2 Scale-RAE (an
affine-free LayerNorm), both on a fixed grid; and ViT tokens to that grid."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Union

import torch
import torch.nn.functional as F

from ..errors import LatentError
from ..tensor_file import read_tensor_file
from .base import LatentSpace, require_tensor

log = logging.getLogger(__name__)

DINOV2_STATS_EPS = 1e-5
SIGLIP_LN_EPS = 1e-6


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT patch tokens [B, N, C] (N a perfect square) -> grid [B, C, √N, √N], row-major like the reference."""
    tokens = require_tensor(tokens, "tokens")
    if tokens.ndim != 3:
        raise LatentError(f"tokens must be [B, N, C], got shape {tuple(tokens.shape)}")
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise LatentError(f"{n} tokens do not form a square grid; drop the special tokens first (DINOv2 with "
                          "registers: tokens[:, 5:] removes CLS + 4 registers)")
    return tokens.transpose(1, 2).reshape(b, c, side, side)


class DINOv2Latent(LatentSpace):
    """DINOv2-B-with-registers RAE: features [768, 32, 32] (affine-free final LayerNorm, CLS + 4 registers
    dropped) normalised per element, `(z − mean)/sqrt(var + 1e-5)`, with the RAE's `stat.pt` statistics.

    Statistics: `DINOv2Latent(mean, var)` or `DINOv2Latent.from_stats_file(path)`. `normalize` also accepts
    the encoder's tokens [B, 1024, 768]."""

    name, title, channels, raw_channels, vae_factor = "dinov2", "DINOv2-RAE", 768, 768, 16
    fixed_grid = (32, 32)
    STATS_SHAPE = (768, 32, 32)

    def __init__(self, mean: Any = None, var: Any = None, eps: float = DINOV2_STATS_EPS) -> None:
        if (mean is None) != (var is None):
            raise LatentError("DINOv2Latent needs both mean and var (the 'mean' and 'var' of the RAE's stat.pt), "
                              "or neither")
        self.eps = float(eps)
        self.mean = self.var = None
        if mean is not None:
            self.mean = self._stat(mean, "mean")
            self.var = self._stat(var, "var")
            if (self.var < 0).any():
                raise LatentError("DINOv2Latent: var has negative entries; pass the variance ('var' of stat.pt)")

    @classmethod
    def _stat(cls, value: Any, what: str) -> torch.Tensor:
        t = torch.as_tensor(value).detach().to("cpu", torch.float32)
        while t.ndim > 3 and t.shape[0] == 1:  # tolerate a saved [1, 768, 32, 32]
            t = t[0]
        if tuple(t.shape) != cls.STATS_SHAPE:
            raise LatentError(f"DINOv2Latent: {what} must have shape [768, 32, 32] (the RAE's "
                              f"imagenet1k_512/stat.pt), got {list(t.shape)}")
        if not torch.isfinite(t).all():
            raise LatentError(f"DINOv2Latent: {what} contains NaN/Inf; the statistics file is damaged")
        return t

    @property
    def has_stats(self) -> bool:
        return self.mean is not None

    @classmethod
    def from_stats_file(cls, path: Union[str, os.PathLike], eps: float = DINOV2_STATS_EPS) -> "DINOv2Latent":
        """Read the RAE statistics file (`checkpoints/rae/stats/dinov2/wReg_base/imagenet1k_512/stat.pt`: a dict
        with tensors 'mean' and 'var' of shape [768, 32, 32]); `.safetensors` with the same keys works too."""
        stats = read_tensor_file(path, "DINOv2-RAE statistics file", error=LatentError, nested=True).tensors
        missing = [k for k in ("mean", "var") if k not in stats]
        if missing:
            raise LatentError(f"{str(path)!r} has no {' or '.join(repr(k) for k in missing)} entry (keys: "
                              f"{sorted(stats)[:12]}); the RAE statistics file (stat.pt) holds 'mean' and 'var'")
        log.info("DINOv2-RAE latent statistics read from %s", path)
        return cls(stats["mean"], stats["var"], eps=eps)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        if isinstance(raw, torch.Tensor) and raw.ndim == 3 and raw.shape[-1] == self.raw_channels:
            raw = tokens_to_grid(raw)
        return super().normalize(raw)

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_stats:
            raise LatentError("DINOv2Latent has no statistics: build it with DINOv2Latent.from_stats_file("
                              "'.../imagenet1k_512/stat.pt') or DINOv2Latent(mean, var)")
        if tuple(x.shape[-2:]) != self.fixed_grid:
            raise LatentError(f"DINOv2-RAE: the statistics are per element of a 32×32 grid; got a "
                              f"{x.shape[-2]}×{x.shape[-1]} grid (the encoder resizes every image to 448², "
                              "giving 32×32)")
        mean = self.mean.to(x.device, x.dtype).unsqueeze(0)
        std = torch.sqrt(self.var.to(x.device, x.dtype) + self.eps).unsqueeze(0)
        return mean, std

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        mean, std = self._moments(raw)
        return (raw - mean) / std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._moments(z)
        return z * std + mean


class SigLIPLatent(LatentSpace):
    """SigLIP-2 So400M Scale-RAE: pre-final-LN tokens, affine-free LayerNorm over the 1152 channels of each
    token (eps 1e-6, float32), laid out [1152, 16, 16]. `normalize` accepts tokens [B, 256, 1152] or a grid
    [B, 1152, h, w]. LayerNorm discards each token's mean and scale, so `denormalize` is impossible."""

    name, title, channels, raw_channels, vae_factor = "siglip", "SigLIP Scale-RAE", 1152, 1152, 16
    fixed_grid = (16, 16)

    def __init__(self, eps: float = SIGLIP_LN_EPS) -> None:
        self.eps = float(eps)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        if isinstance(raw, torch.Tensor) and raw.ndim == 3 and raw.shape[-1] == self.raw_channels:
            raw = tokens_to_grid(raw)
        return super().normalize(raw)

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        tokens = raw.permute(0, 2, 3, 1)
        return F.layer_norm(tokens, (self.channels,), eps=self.eps).permute(0, 3, 1, 2).contiguous()

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        raise LatentError("SigLIP Scale-RAE latents cannot be denormalised: the affine-free LayerNorm discards each "
                          "token's mean and scale. The normalised latent is what the Scale-RAE decoder and PiD "
                          "consume; pass it on as is")
