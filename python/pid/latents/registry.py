"""The latent spaces by name (`get_latent_space`, with the aliases people use) and `check_latent`, which validates a
normalised latent before a decoder sees it, naming the likely cause of what does not fit."""

from __future__ import annotations

import difflib
from typing import Any

import torch

from ..errors import LatentError
from .base import KNOWN_LAYOUTS, LatentSpace, likely_cause, rank_hint, require_tensor
from .flux2 import Flux2Latent
from .rae import DINOv2Latent, SigLIPLatent
from .vae import FluxLatent, QwenImageLatent, SD3Latent, SDXLLatent

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


def check_latent(z: Any, space: Any, *, what: str = "latent") -> torch.Tensor:
    """Validate a normalised latent before it goes to a decoder for `space` (name,
    Variant or latent-space object): a 4-D floating tensor [B, C, h, w] with the space's channel count,
    finite values and, for the RAEs, their fixed grid. Returns `z` unchanged; raises LatentError naming the
    expected layout and the likely cause."""
    space = get_latent_space(space)
    z = require_tensor(z, what)
    if not z.is_floating_point():
        raise LatentError(f"{what} has dtype {z.dtype}; latents are floating point (float32/bfloat16/float16)")
    if z.ndim != 4:
        raise LatentError(f"{what} must be 4-D [B, {space.channels}, h, w] for latent space {space.name!r}, got shape "
                          f"{tuple(z.shape)}{rank_hint(z, space)}")
    b, c, h, w = z.shape
    if c != space.channels:
        hint = ""
        if w == space.channels and (c not in KNOWN_LAYOUTS or c == h):
            hint = ": it looks channels-last [B, h, w, C]; use z.permute(0, 3, 1, 2)"
        else:
            cause = likely_cause(c, space)
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
