"""The base of every latent space PiD decodes (`LatentSpace`: normalise / denormalise, geometry, checks), the noise
frames, and the messages that name the likely cause of a latent that does not fit."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import LatentError

FLOW = "flow"
VP = "vp"
NOISE_FRAMES = (FLOW, VP)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def require_tensor(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise LatentError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise LatentError(f"{what} is complex ({x.dtype}); latents are real floating-point tensors")
    return x


# Channel counts of the latent layouts people hand over, what each looks like, and the latent spaces that decode it
# (tests/test_latents.py checks the last against the registry).
KNOWN_LAYOUTS = {
    4: ("an SDXL latent", ("sdxl",)),
    16: ("a FLUX.1/Z-Image, SD3 or Qwen-Image latent", ("flux", "sd3", "qwenimage")),
    32: ("a raw (unpacked) 32-channel FLUX.2 latent", ()),
    64: ("a 2×2-packed FLUX.1 latent (FluxPipeline's token packing); unpack it to [B, 16, H/8, W/8] "
         "(FluxPipeline._unpack_latents)", ()),
    128: ("a packed FLUX.2 latent", ("flux2",)),
    768: ("a DINOv2-RAE latent", ("dinov2",)),
    1152: ("a SigLIP Scale-RAE latent", ("siglip",)),
}


def likely_cause(c: int, space: LatentSpace) -> str:
    if space.name == "flux2" and c == 32:
        return "a raw 32-channel FLUX.2 latent: pack it with Flux2Latent.pack/normalize"
    if space.name == "flux2" and c == 16:
        return ("a 16-channel FLUX.1-family latent given to a FLUX.2 decoder; FLUX.2 and FLUX.2-klein latents "
                "have 32 raw / 128 packed channels; use a flux decoder for FLUX.1/Z-Image latents")
    what, users = KNOWN_LAYOUTS.get(c, (None, ()))
    if what is None:
        return ""
    use = f"; decoders for it: latent space {' / '.join(users)}" if users else ""
    return f"{c} channels given to {_article(space.title)} {space.title} decoder: this looks like {what}{use}"


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOS" and not word.startswith("SigLIP") else "a"


def rank_hint(x: torch.Tensor, space: LatentSpace) -> str:
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
        return self._normalize(raw.to(compute_dtype(raw))).to(out_dtype(raw))

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent [B, channels, h, w] -> raw VAE moment (input dtype), ready for the VAE decoder."""
        z = self._check_4d(z, "latent")
        if z.shape[1] != self.channels:
            raise LatentError(f"{self.title}: the normalised latent has {self.channels} channels, got "
                              f"{z.shape[1]} (shape {tuple(z.shape)}){self._channel_hint(z.shape[1])}")
        return self._denormalize(z.to(compute_dtype(z))).to(out_dtype(z))

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
        x = require_tensor(x, f"{self.title} {what}")
        if x.ndim != 4:
            raise LatentError(f"{self.title}: the {what} must be 4-D [B, C, h, w], got shape {tuple(x.shape)}"
                              f"{rank_hint(x, self)}")
        return x

    def _channel_hint(self, c: int) -> str:
        cause = likely_cause(c, self)
        return f": {cause}" if cause else ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, channels={self.channels}, vae_factor={self.vae_factor}, "
                f"noise_frame={self.noise_frame!r})")
