"""Latent spaces PiD decodes: one object per backbone family, converting between the raw VAE (or encoder) moment
and the normalised latent PiD consumes, their registry (`get_latent_space`), and `check_latent`, which validates a
latent before a decoder sees it with a message naming the likely cause."""

from __future__ import annotations

import difflib
import math
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from ..errors import LatentError
from ..tensor_file import read_tensor_file

log = logging.getLogger(__name__)

FLOW = "flow"
VP = "vp"
NOISE_FRAMES = (FLOW, VP)

# Qwen-Image / Qwen-Image-2512 (Wan-2.1 VAE) per-channel constants, as in diffusers' AutoencoderKLQwenImage.
QWENIMAGE_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
                  0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
QWENIMAGE_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
                 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

FLUX2_BN_EPS = 1e-4
DINOV2_STATS_EPS = 1e-5
SIGLIP_LN_EPS = 1e-6


# --------------------------------------------------------------------------------------------- helpers
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def _require_tensor(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise LatentError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise LatentError(f"{what} is complex ({x.dtype}); latents are real floating-point tensors")
    return x


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT patch tokens [B, N, C] (N a perfect square) -> grid [B, C, √N, √N], row-major like the reference."""
    tokens = _require_tensor(tokens, "tokens")
    if tokens.ndim != 3:
        raise LatentError(f"tokens must be [B, N, C], got shape {tuple(tokens.shape)}")
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise LatentError(f"{n} tokens do not form a square grid; drop the special tokens first (DINOv2 with "
                          "registers: tokens[:, 5:] removes CLS + 4 registers)")
    return tokens.transpose(1, 2).reshape(b, c, side, side)


# ------------------------------------------------------------------------------------- latent spaces
class LatentSpace:
    """Base of the per-backbone latent spaces. Subclasses implement `_normalize` / `_denormalize`."""

    name: str = ""
    title: str = ""  # human name used in messages
    channels: int = 0  # channels of the normalised latent handed to PiD
    raw_channels: int = 0  # channels of the raw VAE / encoder moment
    vae_factor: int = 8  # image pixels per latent cell
    noise_frame: str = FLOW
    fixed_grid: Optional[tuple[int, int]] = None

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE moment [B, raw_channels, h, w] -> normalised latent [B, channels, h, w] (input dtype)."""
        raw = self._check_4d(raw, "raw latent")
        if raw.shape[1] != self.raw_channels:
            raise LatentError(f"{self.title}: the raw VAE mean has {self.raw_channels} channels, got "
                              f"{raw.shape[1]} (shape {tuple(raw.shape)}){self._channel_hint(raw.shape[1])}")
        return self._normalize(raw.to(_compute_dtype(raw))).to(_out_dtype(raw))

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent [B, channels, h, w] -> raw VAE moment (input dtype), ready for the VAE decoder."""
        z = self._check_4d(z, "latent")
        if z.shape[1] != self.channels:
            raise LatentError(f"{self.title}: the normalised latent has {self.channels} channels, got "
                              f"{z.shape[1]} (shape {tuple(z.shape)}){self._channel_hint(z.shape[1])}")
        return self._denormalize(z.to(_compute_dtype(z))).to(_out_dtype(z))

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- geometry
    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent the VAE produces for an image of height × width pixels.

        The RAEs resize internally and always give their fixed grid; VAEs need sides divisible by vae_factor
        (the reference centre-crops inputs to multiples of 16)."""
        if self.fixed_grid is not None:
            return self.fixed_grid
        if height % self.vae_factor or width % self.vae_factor:
            raise LatentError(f"{self.title}: image {width}×{height} is not a multiple of {self.vae_factor} "
                              f"pixels per side; centre-crop it to multiples of 16 before encoding")
        return height // self.vae_factor, width // self.vae_factor

    def _check_4d(self, x: Any, what: str) -> torch.Tensor:
        x = _require_tensor(x, f"{self.title} {what}")
        if x.ndim != 4:
            raise LatentError(f"{self.title}: the {what} must be 4-D [B, C, h, w], got shape {tuple(x.shape)}"
                              f"{_rank_hint(x, self)}")
        return x

    def _channel_hint(self, c: int) -> str:
        cause = _likely_cause(c, self)
        return f": {cause}" if cause else ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, channels={self.channels}, vae_factor={self.vae_factor}, "
                f"noise_frame={self.noise_frame!r})")


class ScaledLatent(LatentSpace):
    """Affine VAE normalisation `z = scale·(μ − shift)`, `μ = z/scale + shift` (flux_vae.py / sdxl_vae.py)."""

    scale: float = 1.0
    shift: float = 0.0

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return self.scale * (raw - self.shift)

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale + self.shift


class FluxLatent(ScaledLatent):
    """FLUX.1 / Z-Image / Z-Image-Turbo VAE (`ae.safetensors`): z = 0.3611·(μ − 0.1159), 16 ch at /8."""

    name, title, channels, raw_channels, vae_factor = "flux", "FLUX.1/Z-Image", 16, 16, 8
    scale, shift = 0.3611, 0.1159


class SD3Latent(ScaledLatent):
    """SD3 VAE: z = 1.5305·(μ − 0.0609), 16 ch at /8."""

    name, title, channels, raw_channels, vae_factor = "sd3", "SD3", 16, 16, 8
    scale, shift = 1.5305, 0.0609


class SDXLLatent(ScaledLatent):
    """SDXL VAE (after quant_conv): z = 0.13025·μ, 4 ch at /8. Noisy SDXL latents use the VP frame."""

    name, title, channels, raw_channels, vae_factor, noise_frame = "sdxl", "SDXL", 4, 4, 8, VP
    scale, shift = 0.13025, 0.0


class QwenImageLatent(LatentSpace):
    """Qwen-Image / -2512 (Wan-2.1 VAE): z_c = (μ_c − mean_c)·(1/std_c), 16 ch at /8.

    `normalize` accepts [B, 16, h, w] or the video-VAE layout [B, 16, 1, h, w] and always returns the 4-D
    [B, 16, h, w] PiD consumes. `denormalize` returns 4-D, or [B, 16, 1, h, w] with `video_layout=True` (what
    diffusers' AutoencoderKLQwenImage.decode expects)."""

    name, title, channels, raw_channels, vae_factor = "qwenimage", "Qwen-Image", 16, 16, 8

    def __init__(self) -> None:
        self.mean = torch.tensor(QWENIMAGE_MEAN, dtype=torch.float32)
        self.std = torch.tensor(QWENIMAGE_STD, dtype=torch.float32)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return super().normalize(self._squeeze_frame(raw, "raw latent"))

    def denormalize(self, z: torch.Tensor, video_layout: bool = False) -> torch.Tensor:
        out = super().denormalize(self._squeeze_frame(z, "latent"))
        return out.unsqueeze(2) if video_layout else out

    def _squeeze_frame(self, x: Any, what: str) -> Any:
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            if x.shape[2] != 1:
                raise LatentError(f"Qwen-Image: the {what} has {x.shape[2]} frames (shape {tuple(x.shape)}); PiD "
                                  "decodes images, so pass one frame: x[:, :, i] or x[:, :, i:i+1]")
            return x[:, :, 0]
        return x

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean.to(x.device, x.dtype).view(1, -1, 1, 1)
        inv_std = (1.0 / self.std).to(x.device, x.dtype).view(1, -1, 1, 1)
        return mean, inv_std

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(raw)
        return (raw - mean) * inv_std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(z)
        return z / inv_std + mean


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
                raise LatentError(f"{where} has no {missing[0]!r}{_similar_keys(keys, missing[0])}. Check "
                                  "prefix= (None searches every prefix)")
            return mean_key, var_key
        prefixes = sorted({k[: -len("bn.running_mean")] for k in keys
                           if (k == "bn.running_mean" or k.endswith(".bn.running_mean"))
                           and k[: -len("running_mean")] + "running_var" in keys}, key=len)
        if not prefixes:
            raise LatentError(
                f"{where} holds no FLUX.2 batch-norm statistics ('bn.running_mean' and 'bn.running_var', possibly "
                f"prefixed){_similar_keys(keys, 'bn.running_mean')}. This is probably not a FLUX.2 VAE (a FLUX.1 "
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
        raw = _require_tensor(raw, "FLUX.2 raw latent")
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
        packed = _require_tensor(packed, "FLUX.2 packed latent")
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
        return self._normalize(raw.to(_compute_dtype(raw))).to(_out_dtype(raw))

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


LATENT_CLASSES: dict[str, type[LatentSpace]] = {
    c.name: c for c in (FluxLatent, SD3Latent, SDXLLatent, QwenImageLatent, Flux2Latent, DINOv2Latent, SigLIPLatent)
}
LATENT_NAMES = tuple(LATENT_CLASSES)

ALIASES = {
    "flux1": "flux", "flux.1": "flux", "zimage": "flux", "z-image": "flux", "zimage-turbo": "flux",
    "z-image-turbo": "flux", "boogu": "flux", "sdxl-vae": "sdxl", "qwen": "qwenimage", "qwen-image": "qwenimage",
    "qwenimage-2512": "qwenimage", "flux.2": "flux2", "flux2-klein": "flux2", "flux2-klein-4b": "flux2",
    "flux2-klein-9b": "flux2", "klein": "flux2", "rae": "dinov2", "dinov2-rae": "dinov2", "scale-rae": "siglip",
    "scale_rae": "siglip", "siglip2": "siglip",
}


def get_latent_space(name: Any, **kwargs: Any) -> LatentSpace:
    """The latent space called `name` (flux, sd3, sdxl, qwenimage, flux2, dinov2, siglip, or an alias such as
    zimage / flux2-klein-4b / qwenimage-2512). Also accepts a `Variant` (its latent space's name) or a
    latent-space object (returned as is).

    kwargs go to the constructor: flux2 takes `bn_mean`, `bn_var`, `eps` or `vae_file=path`; dinov2 takes
    `mean`, `var`, `eps` or `stats_file=path`; siglip takes `eps`; the others take none."""
    if isinstance(name, LatentSpace):
        if kwargs:
            raise LatentError(f"get_latent_space: {name!r} is already built; arguments {sorted(kwargs)} not applied")
        return name
    if hasattr(name, "latent") and hasattr(name.latent, "channels"):  # a Variant
        name = name.latent
    if hasattr(name, "name") and hasattr(name, "channels"):  # a Variant's latent space: a fresh instance
        name = name.name
    if not isinstance(name, str):
        raise LatentError(f"get_latent_space: expected a latent-space name, got {type(name).__name__}; known: "
                          f"{', '.join(LATENT_NAMES)}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in LATENT_CLASSES:
        close = difflib.get_close_matches(key, list(LATENT_CLASSES) + list(ALIASES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LatentError(f"unknown latent space {name!r}{hint}. Known: {', '.join(LATENT_NAMES)}; aliases: "
                          f"{', '.join(sorted(ALIASES))}")
    cls = LATENT_CLASSES[key]
    if key == "flux2" and "vae_file" in kwargs:
        return Flux2Latent.from_vae_file(kwargs.pop("vae_file"), **kwargs)
    if key == "dinov2" and "stats_file" in kwargs:
        return DINOv2Latent.from_stats_file(kwargs.pop("stats_file"), **kwargs)
    try:
        return cls(**kwargs)
    except TypeError as e:
        accepted = {"flux2": "bn_mean, bn_var, eps, vae_file", "dinov2": "mean, var, eps, stats_file",
                    "siglip": "eps"}.get(key, "no arguments")
        raise LatentError(f"latent space {key!r} takes {accepted}; got {sorted(kwargs)}") from e


# --------------------------------------------------------------------------------------- validation
_KNOWN_LAYOUTS = {
    4: "an SDXL latent",
    16: "a FLUX.1/Z-Image, SD3 or Qwen-Image latent",
    32: "a raw (unpacked) 32-channel FLUX.2 latent",
    64: "a 2×2-packed FLUX.1 latent (FluxPipeline's token packing); unpack it to [B, 16, H/8, W/8] "
        "(FluxPipeline._unpack_latents)",
    128: "a packed FLUX.2 latent",
    768: "a DINOv2-RAE latent",
    1152: "a SigLIP Scale-RAE latent",
}


def _likely_cause(c: int, space: LatentSpace) -> str:
    if space.name == "flux2" and c == 32:
        return "a raw 32-channel FLUX.2 latent: pack it with Flux2Latent.pack/normalize"
    if space.name == "flux2" and c == 16:
        return ("a 16-channel FLUX.1-family latent given to a FLUX.2 decoder; FLUX.2 and FLUX.2-klein latents "
                "have 32 raw / 128 packed channels; use a flux decoder for FLUX.1/Z-Image latents")
    what = _KNOWN_LAYOUTS.get(c)
    if what is None:
        return ""
    users = [n for n, cls in LATENT_CLASSES.items() if cls.channels == c]
    use = f"; decoders for it: latent space {' / '.join(users)}" if users else ""
    return f"{c} channels given to {_article(space.title)} {space.title} decoder: this looks like {what}{use}"


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOS" and not word.startswith("SigLIP") else "a"


def _rank_hint(x: torch.Tensor, space: LatentSpace) -> str:
    if x.ndim == 5 and x.shape[2] == 1:
        return "; this is the video-VAE layout [B, C, 1, h, w]: drop the frame axis with x[:, :, 0]"
    if x.ndim == 3:
        if x.shape[0] == space.channels:
            return "; add the batch dimension: x[None]"
        if x.shape[-1] in (space.channels, space.raw_channels):
            if space.name == "flux2":
                return ("; this is a packed token sequence [B, seq, 128] (Flux2Pipeline's layout): unpack it with "
                        "the pipeline's _unpack_latents_with_ids")
            return "; this is a token sequence [B, N, C]: convert it with pid.latents.tokens_to_grid"
        if x.shape[-1] == 64:
            return "; this is FluxPipeline's packed token sequence [B, seq, 64]: FluxPipeline._unpack_latents"
    return ""


def check_latent(z: Any, space: Any, *, what: str = "latent") -> torch.Tensor:
    """Validate a normalised latent before it goes to a decoder for `space` (name,
    Variant or latent-space object): a 4-D floating tensor [B, C, h, w] with the space's channel count,
    finite values and, for the RAEs, their fixed grid. Returns `z` unchanged; raises LatentError naming the
    expected layout and the likely cause."""
    space = get_latent_space(space)
    z = _require_tensor(z, what)
    if not z.is_floating_point():
        raise LatentError(f"{what} has dtype {z.dtype}; latents are floating point (float32/bfloat16/float16)")
    if z.ndim != 4:
        raise LatentError(f"{what} must be 4-D [B, {space.channels}, h, w] for latent space {space.name!r}, got shape "
                          f"{tuple(z.shape)}{_rank_hint(z, space)}")
    b, c, h, w = z.shape
    if c != space.channels:
        hint = ""
        if w == space.channels and (c not in _KNOWN_LAYOUTS or c == h):
            hint = ": it looks channels-last [B, h, w, C]; use z.permute(0, 3, 1, 2)"
        else:
            cause = _likely_cause(c, space)
            hint = f": {cause}" if cause else ""
        raise LatentError(f"{what} has {c} channels but latent space {space.name!r} expects {space.channels} "
                          f"([B, {space.channels}, h, w]; got shape {tuple(z.shape)}){hint}")
    if b == 0 or h == 0 or w == 0:
        raise LatentError(f"{what} is empty (shape {tuple(z.shape)})")
    if space.fixed_grid is not None and (h, w) != space.fixed_grid:
        gh, gw = space.fixed_grid
        raise LatentError(f"{what}: {space.title} latents are always {gh}×{gw} (the encoder resizes every image), "
                          f"got {h}×{w}; the decoder was only trained on that grid. Re-encode the image with the "
                          "RAE encoder")
    finite = torch.isfinite(z)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        nan = int(torch.isnan(z).sum())
        raise LatentError(f"{what} has {bad} non-finite values ({nan} NaN, {bad - nan} Inf) of {z.numel()}; the "
                          "LDM or VAE diverged (fp16 overflow is a common cause: run the VAE in bf16/float32)")
    return z


def _similar_keys(keys: list[str], target: str, limit: int = 8) -> str:
    pool = [k for k in keys if "running" in k or k.split(".")[-2:-1] == ["bn"] or "norm" in k.lower()]
    close = difflib.get_close_matches(target, pool or keys, n=limit, cutoff=0.3)
    close += [k for k in pool if "running" in k and k not in close][: max(0, limit - len(close))]
    if close:
        return f"; similar keys: {close}"
    return f"; the file has {len(keys)} keys, e.g. {keys[:5]}" if keys else "; the file has no tensors"
