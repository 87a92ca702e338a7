"""ComfyUI's LATENT as PiD takes it: the layouts ComfyUI keeps latents in, and the noise frame of a latent an LDM
sampler handed back before its last step. Pure tensor code: importable and tested without ComfyUI.

A ComfyUI LATENT is a dict whose "samples" hold the latent in the VAE's space (`process_out` of what the LDM
denoises), one layout per family:

==========  ============================  =====================================================================
family      ComfyUI "samples"             → PiD's normalised latent
==========  ============================  =====================================================================
flux        [B, 16, h, w], raw VAE mean   0.3611·(μ − 0.1159) (FLUX.1, Z-Image; ComfyUI's `Flux` format)
sd3         [B, 16, h, w], raw            1.5305·(μ − 0.0609)
sdxl        [B, 4, h, w], raw             0.13025·μ
qwenimage   [B, 16, 1, h, w], raw         (μ − mean)·(1/std) of the one frame (ComfyUI's `Wan21` format)
flux2       [B, 128, h, w]                as it is: ComfyUI's FLUX.2 VAE already packs 2×2 and batch-normalises
==========  ============================  =====================================================================

A sampler stopped at step K of N (KSamplerAdvanced with `return_with_leftover_noise`, or `PidEarlyStopKSampler`)
hands back its state in ComfyUI's own frame, which is not PiD's:

* flow models (FLUX, SD3, Qwen-Image, FLUX.2; ComfyUI's `CONST` sampling) return `x_K / (1 − σ_K)` where
  `x_K = (1 − σ_K)·x0 + σ_K·ε` (`inverse_noise_scaling`); PiD takes `x_K` itself with σ_K.
* SDXL (`EPS` sampling) returns `x_K = x0 + σ_K·ε` with the EDM σ (up to ~14.6); PiD's SDXL decoder was trained in
  the VP frame: `x_K / sqrt(σ² + 1)` with `σ / sqrt(σ² + 1)` (`pid.latents.euler_to_vp`, as `pid.diffusers` does).

The early-stop nodes record the stop in the LATENT dict under `NOISE_KEY` ({"sigma", "sampling", "step", "steps"});
`to_pid_latent` applies it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from ..errors import LatentError, PidError
from ..latents import FLOW, VP, euler_to_vp, get_latent_space

NOISE_KEY = "pid_noise"  # LATENT dict key: the noise level of a latent stopped before the LDM's last step
SAMPLINGS = ("flow", "eps")  # ComfyUI's CONST (flow matching) and EPS (ε- or v-prediction) model sampling
FAMILIES = ("flux", "flux2", "sd3", "sdxl", "qwenimage")  # latent spaces ComfyUI LDMs produce
TRAINED_SIGMA = 0.8  # PiD's latent branch was trained on σ up to this


def noise_record(sigma: float, sampling: str, step: int, steps: int) -> dict:
    """What an early-stop node stores under `NOISE_KEY`: ComfyUI's σ after `step` of `steps`, and the model's sampling
    ("flow" or "eps"), which says the frame the latent is in."""
    if sampling not in SAMPLINGS:
        raise PidError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0 and (sampling == "eps" or sigma < 1)):
        raise PidError(f"a {sampling} model's σ after step {step} of {steps} is {sigma}: a stopped latent has "
                       f"0 <= σ{' < 1' if sampling == 'flow' else ''}; stop later")
    return {"sigma": sigma, "sampling": sampling, "step": int(step), "steps": int(steps)}


def family_of(latent_format: str, decoder) -> str:
    """The latent space to read a LATENT in: `latent_format`, or with "auto" the decoder's variant's."""
    variant = getattr(decoder, "variant", None)
    if latent_format == "auto":
        if variant is None:
            raise PidError("the decoder's checkpoint names no released variant, so its latent space is unknown: set "
                           f"latent_format to the LDM's family ({', '.join(FAMILIES)}), or load the file with "
                           "its variant chosen in PiD Loader")
        latent_format = variant.latent.name
    if latent_format not in FAMILIES:
        raise PidError(f"latent_format must be 'auto' or one of {', '.join(FAMILIES)} (the latent spaces of the "
                       f"LDMs ComfyUI runs), got {latent_format!r}")
    if variant is not None and variant.latent.name != latent_format:
        raise PidError(f"latent_format is {latent_format!r} but the decoder is {variant.name!r}, a decoder of "
                       f"{variant.latent.name} latents: load a {latent_format} variant, or set latent_format to auto")
    return latent_format


def normalised_latent(samples: Any, family: str) -> torch.Tensor:
    """ComfyUI's LATENT "samples" of `family` → PiD's normalised latent [B, C, h, w] (float32, on the samples'
    device). Exactly `pid.latents` normalisation, the same arithmetic `decode(latent_format="raw")` runs."""
    if not isinstance(samples, torch.Tensor):
        raise LatentError(f"the LATENT's samples must be a tensor, got {type(samples).__name__} (a nested or "
                          "batched-list latent is not an image latent PiD decodes)")
    if getattr(samples, "is_nested", False):
        raise LatentError("the LATENT holds a nested tensor (several resolutions); PiD decodes one image latent")
    if not samples.is_floating_point():
        raise LatentError(f"the LATENT's samples are {samples.dtype}; expected floating-point")
    samples = samples.float()
    if family == "qwenimage":
        if samples.ndim == 5 and samples.shape[2] != 1:
            raise LatentError(f"the Qwen-Image LATENT has {samples.shape[2]} frames (shape {tuple(samples.shape)}); "
                              "PiD decodes images: one frame")
        return get_latent_space("qwenimage").normalize(samples)  # [B, 16, 1, h, w] or [B, 16, h, w]
    if samples.ndim != 4:
        raise LatentError(f"a {family} LATENT is [B, C, h, w], got shape {tuple(samples.shape)}"
                          + (" (a video latent: PiD decodes images)" if samples.ndim == 5 else ""))
    if family == "flux2":
        if samples.shape[1] == 32:
            raise LatentError("the FLUX.2 LATENT has 32 channels: ComfyUI's FLUX.2 latents are packed to 128 "
                              "channels; this one was not made by ComfyUI's FLUX.2 VAE or sampler")
        return samples  # ComfyUI's FLUX.2 format: already packed and batch-normalised (process_in is the identity)
    return get_latent_space(family).normalize(samples)


def to_pid_frame(latent: torch.Tensor, sigma: float, sampling: str, family: str) -> tuple[torch.Tensor, float]:
    """A normalised latent in ComfyUI's frame of a sampler stopped at σ (ComfyUI's σ of the model) → (latent, σ)
    in the frame the family's PiD decoders were trained in (flow; VP for SDXL). See the module docstring."""
    frame = get_latent_space(family).noise_frame
    if sampling == "flow" and frame == FLOW:
        if not 0 <= sigma < 1:
            raise PidError(f"a flow model's σ lies in [0, 1), got {sigma}")
        return latent * (1.0 - sigma), float(sigma)  # undo ComfyUI's inverse_noise_scaling x / (1 − σ)
    if sampling == "eps" and frame == VP:
        out, sigma_vp = euler_to_vp(latent, sigma)
        return out, float(sigma_vp)
    kind = {"flow": "a flow-matching model's (FLUX, SD3, Qwen-Image)", "eps": "an ε/v-prediction model's (SDXL)"}
    raise PidError(f"the latent is {kind[sampling]}, but {family} decoders take "
                   f"{'flow' if frame == FLOW else 'SDXL'} latents: decode it with a decoder of its own family")


def to_pid_latent(latent: Mapping, family: str, sigma: float = 0.0) -> tuple[torch.Tensor, float, Optional[dict]]:
    """A ComfyUI LATENT dict → (normalised latent [B, C, h, w] in PiD's frame, σ in PiD's frame, the early-stop
    record or None). `sigma` is a noise level typed by hand, in PiD's frame, for a latent without a record; a
    latent carrying one must come with sigma 0."""
    if not isinstance(latent, Mapping) or "samples" not in latent:
        raise LatentError(f"expected a ComfyUI LATENT (a dict with 'samples'), got {type(latent).__name__}")
    z = normalised_latent(latent["samples"], family)
    record = latent.get(NOISE_KEY)
    if record is None:
        sigma = float(sigma)
        if not 0 <= sigma <= 1:
            raise PidError(f"sigma is PiD's noise level, in [0, 1], got {sigma}")
        return z, sigma, None
    if float(sigma) != 0:
        raise PidError(f"the latent carries its noise level (σ {record['sigma']:.4g} of the LDM, stopped at step "
                       f"{record['step']} of {record['steps']}) and sigma is {sigma} too: set sigma to 0")
    z, pid_sigma = to_pid_frame(z, record["sigma"], record["sampling"], family)
    return z, pid_sigma, record


def to_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """PiD's images [B, 3, H, W] in [-1, 1] → ComfyUI's IMAGE [B, H, W, 3], float32 in [0, 1]."""
    return ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


__all__ = ["FAMILIES", "NOISE_KEY", "SAMPLINGS", "TRAINED_SIGMA", "family_of", "noise_record", "normalised_latent",
           "to_comfy_image", "to_pid_frame", "to_pid_latent"]
