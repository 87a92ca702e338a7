"""What one decode takes, checked where it enters: the latent (normalised, rounded to bfloat16 values as the reference
hands it over), the output size, σ, the caption embeddings and the noises, gathered in `DecodeInputs` on the
decoder's device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from . import captions
from .config import PidConfig
from .errors import LatentError, PidError
from .sampling import SamplerSettings

log = logging.getLogger("pid.decoder")  # a decode's messages keep the decoder's logger, as before the split


@dataclass
class DecodeInputs:
    """The tensors of one decode, validated and on the decoder's device (what a captured CUDA graph copies in)."""

    latent: torch.Tensor  # [B, C, h, w] normalised latent, rounded to bfloat16 values
    sigma: torch.Tensor  # [B] float32 noise level of the latent
    y: torch.Tensor  # [B, Ltxt, D] caption embeddings, float32
    null_y: Optional[torch.Tensor]  # [B, Ltxt, D] negative caption embeddings (guided teacher only)
    noise: torch.Tensor  # [B, 3, H, W] float32 initial state
    step_noises: Optional[list[torch.Tensor]]  # the student's re-noising draws, or None: drawn from the generator

    def map(self, fn) -> "DecodeInputs":
        """A new DecodeInputs with `fn` applied to every tensor (each of step_noises; None stays None)."""
        def apply(value):
            if value is None:
                return None
            return [fn(v) for v in value] if isinstance(value, list) else fn(value)
        return DecodeInputs(**{name: apply(value) for name, value in vars(self).items()})


def to_device(t: torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    """CPU tensors move to the decoder's device; a tensor on another accelerator is an error."""
    if t.device.type != "cpu" and t.device != device:
        raise PidError(f"{what} is on {t.device} but the decoder is on {device}: move it with "
                       f".to({str(device)!r}), or load the decoder with device={str(t.device)!r}")
    return t.to(device)


def prepare_latent(latent, config: PidConfig, latent_format: str, device: torch.device, *, latent_space=None,
                   default_space=None) -> torch.Tensor:
    """The latent as the network takes it: [B, C, h, w] on `device`, normalised (`latent_format="raw"`: by its latent
    space, `latent_space` (a `pid.latents` object or name), else `default_space` (the variant's)), checked against
    that space and the network's channels, rounded to bfloat16 values."""
    from . import latents as latent_spaces

    if not isinstance(latent, torch.Tensor):
        raise TypeError(f"latent must be a torch.Tensor, got {type(latent).__name__}")
    if latent.ndim == 3:
        latent = latent[None]
    if latent.ndim != 4 or not latent.is_floating_point():
        raise PidError(f"latent must be a floating-point [B, C, h, w] tensor, got {latent.dtype} "
                       f"{tuple(latent.shape)}")
    if latent.numel() == 0:
        raise PidError(f"latent {tuple(latent.shape)} is empty: a latent has at least one sample and one cell")
    latent = to_device(latent, device, "latent")
    if not torch.isfinite(latent).all():
        raise PidError("latent contains NaN or Inf values: check the LDM output (e.g. a VAE run in float16)")
    if latent_format not in ("normalized", "raw"):
        raise PidError(f"latent_format must be 'normalized' or 'raw', got {latent_format!r}")
    space = default_space if latent_space is None else latent_spaces.get_latent_space(latent_space)
    if latent_format == "raw":
        if space is None:
            raise PidError("latent_format='raw' needs the latent space: load a registry variant or pass "
                           "latent_space= (a pid.latents object)")
        latent = space.normalize(latent)
    if space is not None:
        latent_spaces.check_latent(latent, space)
    C = config.lq_latent_channels
    if latent.shape[1] != C:
        raise PidError(f"this decoder takes {C}-channel latents, got {latent.shape[1]} channels")
    # The reference entry points hand PiD a bf16 latent; the network up-casts it.
    rounded = latent.to(torch.bfloat16).to(torch.float32)
    if not torch.isfinite(rounded).all():
        raise LatentError(f"latent values up to {latent.abs().max().item():.3g} overflow bfloat16 (largest finite "
                          "value 3.39e38), the dtype PiD takes latents in: a normalised latent is of order 1, so "
                          "check its normalisation (latent_format='raw' for raw VAE moments)")
    return rounded


def output_size(config: PidConfig, variant, h: int, w: int, size) -> tuple[int, int]:
    """(H, W) of the decoded image: `size` (N or (height, width)) or the latent's natural size; a warning outside the
    natural size or the variant's trained sizes."""
    natural = config.output_size(h, w)
    if size is None:
        H, W = natural
    else:
        H, W = (size, size) if isinstance(size, int) else tuple(size)
        p = config.patch_size
        if H < p or W < p or H % p or W % p:
            raise PidError(f"output size {W}x{H} (width x height) must be a positive multiple of {p} in both "
                           f"sides, e.g. {max(p, W // p * p)}x{max(p, H // p * p)}")
        if (H, W) != natural:
            log.warning("output size %dx%d (width x height) differs from the latent's natural %dx%d: the latent "
                        "features are nearest-resized to the patch grid, which is outside what PiD was trained on",
                        W, H, natural[1], natural[0])
    if variant is not None and not variant.in_trained_envelope(H, W):
        log.warning("%dx%d is outside the sizes %s was trained at (%s); quality is not characterised there",
                    W, H, variant.name, "see Variant.trained_sizes" if variant.trained_sizes
                    else f"sides {variant.trained_side_range}")
    return H, W


def sigma_tensor(sigma, batch: int, device) -> torch.Tensor:
    """The network's per-sample σ [B], validated for a decode: σ ∈ [0, 1]."""
    from .nn import PidNet

    sigma = PidNet.sigma_per_sample(sigma, batch, device)
    if not torch.isfinite(sigma).all() or (sigma < 0).any() or (sigma > 1).any():
        raise PidError(f"sigma must lie in [0, 1] (0 = clean latent), got {sigma.tolist()}")
    return sigma


def prepare_inputs(latent: torch.Tensor, sigma, settings: SamplerSettings, size: tuple[int, int], *,
                   config: PidConfig, device: torch.device, caption=None, caption_embeds=None,
                   negative_caption_embeds=None, text_encoder=None, caption_cache=None,
                   generator: torch.Generator, noise: Optional[torch.Tensor] = None,
                   step_noises: Optional[Sequence[torch.Tensor]] = None,
                   draw_step_noises: bool = False) -> DecodeInputs:
    """A decode's inputs from a prepared latent: σ, the caption embeddings (and the negative ones of a guided
    sampler), the initial noise (given, or drawn from `generator`), and the student's re-noising draws (given;
    drawn now when `draw_step_noises`, in the order the loop would draw them; else None: the loop draws them)."""
    B = latent.shape[0]
    H, W = size

    def embeds(caption, given, what):
        out = captions.resolve_caption_embeds(B, caption=caption, caption_embeds=given, encoder=encoder,
                                              cache=caption_cache, dim=config.txt_embed_dim, txt_len=None)
        return to_device(out, device, what).float()

    with captions.encoder_session(text_encoder, device) as encoder:  # one default encoder at most, freed here
        y = embeds(caption, caption_embeds, "caption_embeds")
        null_y = None
        if settings.guided:
            default = captions.DEFAULT_NEGATIVE_PROMPT if negative_caption_embeds is None else None
            null_y = embeds(default, negative_caption_embeds, "negative_caption_embeds")
    if noise is None:
        noise = torch.randn((B, 3, H, W), generator=generator, device=device, dtype=torch.float32)
    elif tuple(noise.shape) != (B, 3, H, W):
        raise PidError(f"noise must have shape {(B, 3, H, W)}, got {tuple(noise.shape)}")
    noise = to_device(noise, device, "noise").float()
    if draw_step_noises and step_noises is None and settings.name == "student":
        step_noises = [torch.randn_like(noise, generator=generator) for _ in range(settings.noise_draws())]
    if step_noises is not None:
        step_noises = [to_device(e, device, "step_noises").float() for e in step_noises]
    return DecodeInputs(latent, sigma_tensor(sigma, B, device), y, null_y, noise, step_noises)
