"""The VAE latent spaces: one scale and shift (FLUX.1 / Z-Image, SD3, SDXL) or per-channel statistics (Qwen-Image)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LatentError
from .base import VP, LatentSpace

# Qwen-Image / Qwen-Image-2512 (Wan-2.1 VAE) per-channel constants, as in diffusers' AutoencoderKLQwenImage.
QWENIMAGE_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
                  0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
QWENIMAGE_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
                 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


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
