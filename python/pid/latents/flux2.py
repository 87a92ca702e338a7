"""FLUX.2's latent space: the 32-channel VAE mean packed 2×2 into 128 channels, then its VAE's batch-norm statistics."""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..errors import LatentError
from ..tensor_file import read_tensor_file
from .base import LatentSpace, compute_dtype, out_dtype, require_tensor

log = logging.getLogger(__name__)

FLUX2_BN_EPS = 1e-4


class Flux2Latent(LatentSpace):
    """FLUX.2 / FLUX.2-klein VAE: the 32-ch mean at /8 is 2×2-packed to 128 ch at /16 (channel c·4 + 2·i + j)
    and batch-normalised with the VAE's running statistics (no affine, eps 1e-4).

    Statistics come from `Flux2Latent(bn_mean, bn_var)` or `Flux2Latent.from_vae_file(path)`. Without them
    the object still packs, unpacks and validates, but cannot (de)normalise."""

    name, title, channels, raw_channels, vae_factor = "flux2", "FLUX.2", 128, 32, 16
    PACKED_RAW_CHANNELS = 128

    def __init__(self, bn_mean: Any = None, bn_var: Any = None, eps: float = FLUX2_BN_EPS) -> None:
        if (bn_mean is None) != (bn_var is None):
            raise LatentError("Flux2Latent needs both bn_mean and bn_var (the VAE's bn.running_mean and "
                              "bn.running_var), or neither")
        self.eps = float(eps)
        self.bn_mean = self.bn_var = None
        if bn_mean is not None:
            self.bn_mean = self._stat(bn_mean, "bn_mean")
            self.bn_var = self._stat(bn_var, "bn_var")
            if (self.bn_var < 0).any():
                raise LatentError("Flux2Latent: bn_var has negative entries; pass bn.running_var (a variance), "
                                  "not a mean or a log-variance")
        self._announced_packing = False

    @classmethod
    def _stat(cls, value: Any, what: str) -> torch.Tensor:
        t = torch.as_tensor(value).detach().to("cpu", torch.float32).reshape(-1)
        if t.numel() != 128:
            hint = (" (32 values: per-channel stats of the unpacked VAE mean; FLUX.2 normalises the 128 packed "
                    "channels)" if t.numel() == 32 else "")
            raise LatentError(f"Flux2Latent: {what} must have 128 values, got {t.numel()}{hint}. Use the VAE's "
                              "bn.running_mean / bn.running_var, e.g. Flux2Latent.from_vae_file(path)")
        if not torch.isfinite(t).all():
            raise LatentError(f"Flux2Latent: {what} contains NaN/Inf; the VAE file is damaged")
        return t

    @property
    def has_stats(self) -> bool:
        return self.bn_mean is not None

    # --- loading the statistics from a VAE file
    @classmethod
    def from_vae_file(cls, path: Union[str, os.PathLike], prefix: Optional[str] = None,
                      eps: float = FLUX2_BN_EPS) -> "Flux2Latent":
        """Read `bn.running_mean` / `bn.running_var` (possibly under a prefix such as `vae.`) from a FLUX.2 VAE
        file: `.safetensors` or a weights-only `torch.save` file (`.pth`/`.pt`/`.bin`)."""
        sd = read_tensor_file(path, "FLUX.2 VAE file", error=LatentError, nested=True).tensors
        mean_key, var_key = cls._find_bn_keys(list(sd), Path(path), prefix)
        mean, var = sd[mean_key], sd[var_key]
        log.info("FLUX.2 batch-norm statistics read from %s (%s, %s)", path, mean_key, var_key)
        return cls(mean, var, eps=eps)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], prefix: Optional[str] = None,
                        eps: float = FLUX2_BN_EPS) -> "Flux2Latent":
        """Same as `from_vae_file` for an in-memory state dict (e.g. `pipe.vae.state_dict()`)."""
        mean_key, var_key = cls._find_bn_keys(list(state_dict), "the state dict", prefix)
        return cls(state_dict[mean_key], state_dict[var_key], eps=eps)

    @staticmethod
    def _find_bn_keys(keys: list[str], source: Any, prefix: Optional[str]) -> tuple[str, str]:
        where = str(source) if isinstance(source, str) else repr(str(source))
        if prefix is not None:
            p = prefix if (not prefix or prefix.endswith(".")) else prefix + "."
            mean_key, var_key = p + "bn.running_mean", p + "bn.running_var"
            missing = [k for k in (mean_key, var_key) if k not in keys]
            if missing:
                raise LatentError(f"{where} has no {missing[0]!r}{similar_keys(keys, missing[0])}. Check "
                                  "prefix= (None searches every prefix)")
            return mean_key, var_key
        prefixes = sorted({k[: -len("bn.running_mean")] for k in keys
                           if (k == "bn.running_mean" or k.endswith(".bn.running_mean"))
                           and k[: -len("running_mean")] + "running_var" in keys}, key=len)
        if not prefixes:
            raise LatentError(
                f"{where} holds no FLUX.2 batch-norm statistics ('bn.running_mean' and 'bn.running_var', possibly "
                f"prefixed){similar_keys(keys, 'bn.running_mean')}. This is probably not a FLUX.2 VAE (a FLUX.1 "
                "ae.safetensors has no batch norm, and FLUX.1 latents need no statistics). Pass the FLUX.2 VAE "
                "(flux2_ae.safetensors, or diffusers' vae/diffusion_pytorch_model.safetensors of FLUX.2 / "
                "FLUX.2-klein), or give the statistics directly: Flux2Latent(bn_mean, bn_var)")
        if len(prefixes) > 1 and prefixes[0] != "":
            shown = ", ".join(repr(p + "bn.running_mean") for p in prefixes[:6])
            raise LatentError(f"{where} holds several batch-norm statistics ({shown}); choose one with "
                              f"prefix=, e.g. prefix={prefixes[0]!r}")
        p = prefixes[0]
        return p + "bn.running_mean", p + "bn.running_var"

    # --- 2×2 patchify
    @staticmethod
    def pack(raw: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, 4C, H/2, W/2]; out[b, c·4 + 2·i + j, y, x] = raw[b, c, 2y + i, 2x + j]."""
        raw = require_tensor(raw, "FLUX.2 raw latent")
        if raw.ndim != 4:
            raise LatentError(f"Flux2Latent.pack expects [B, 32, h, w], got shape {tuple(raw.shape)}")
        b, c, h, w = raw.shape
        if h % 2 or w % 2:
            raise LatentError(f"Flux2Latent.pack: the raw FLUX.2 latent grid {h}×{w} must have even sides "
                              "(images must be multiples of 16 pixels); crop the image or the latent")
        x = raw.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, c * 4, h // 2, w // 2)

    @staticmethod
    def unpack(packed: torch.Tensor) -> torch.Tensor:
        """Inverse of `pack`: [B, 4C, h, w] -> [B, C, 2h, 2w] (equals F.pixel_shuffle(packed, 2))."""
        packed = require_tensor(packed, "FLUX.2 packed latent")
        if packed.ndim != 4 or packed.shape[1] % 4:
            raise LatentError(f"Flux2Latent.unpack expects [B, 4C, h, w] (128 channels for FLUX.2), got shape "
                              f"{tuple(packed.shape)}")
        b, c4, h, w = packed.shape
        x = packed.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, h * 2, w * 2)

    # --- normalisation
    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE mean -> packed, batch-normalised [B, 128, h/2, w/2] (input dtype).

        Accepts the raw 32-channel mean at /8 (what FLUX.2's VAE encoder and Flux2KleinPipeline's
        `output_type="latent"` give), which it packs first, or an already packed but not yet normalised
        128-channel tensor, which it only batch-normalises."""
        raw = self._check_4d(raw, "raw latent")
        if raw.shape[1] == self.raw_channels:
            if not self._announced_packing:
                log.info("FLUX.2: packing the raw 32-channel latent 2×2 into 128 channels before batch norm")
                self._announced_packing = True
            raw = self.pack(raw)
        elif raw.shape[1] != self.PACKED_RAW_CHANNELS:
            raise LatentError(f"FLUX.2: normalize takes the raw 32-channel VAE mean [B, 32, H/8, W/8] (or its "
                              f"2×2-packed 128-channel form), got {raw.shape[1]} channels (shape "
                              f"{tuple(raw.shape)}){self._channel_hint(raw.shape[1])}")
        return self._normalize(raw.to(compute_dtype(raw))).to(out_dtype(raw))

    def denormalize(self, z: torch.Tensor, unpack: bool = True) -> torch.Tensor:
        """Normalised [B, 128, h, w] -> raw VAE mean [B, 32, 2h, 2w] (the VAE decoder's input), or the packed
        raw [B, 128, h, w] with `unpack=False`."""
        raw = super().denormalize(z)
        return self.unpack(raw) if unpack else raw

    def _bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_stats:
            raise LatentError("Flux2Latent has no batch-norm statistics: build it with "
                              "Flux2Latent.from_vae_file('flux2_ae.safetensors') or Flux2Latent(bn_mean, bn_var) "
                              "(the VAE's bn.running_mean / bn.running_var)")
        mean = self.bn_mean.to(x.device, x.dtype).view(1, -1, 1, 1)
        std = torch.sqrt(self.bn_var.to(x.device, x.dtype) + self.eps).view(1, -1, 1, 1)
        return mean, std

    def _normalize(self, packed: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn(packed)
        return (packed - mean) / std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn(z)
        return z * std + mean


def similar_keys(keys: list[str], target: str, limit: int = 8) -> str:
    pool = [k for k in keys if "running" in k or k.split(".")[-2:-1] == ["bn"] or "norm" in k.lower()]
    close = difflib.get_close_matches(target, pool or keys, n=limit, cutoff=0.3)
    close += [k for k in pool if "running" in k and k not in close][: max(0, limit - len(close))]
    if close:
        return f"; similar keys: {close}"
    return f"; the file has {len(keys)} keys, e.g. {keys[:5]}" if keys else "; the file has no tensors"
