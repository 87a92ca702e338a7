"""Latent spaces PiD decodes: raw VAE moment <-> normalised latent (`base.py`, `vae.py`, `flux2.py`, `rae.py`), the
registry and validation (`registry.py`), and the noise frames of early-terminated (still noisy) latents (`noise.py`).

PiD always consumes the *normalised* latent, the tensor the LDM denoises (diffusers
``output_type="latent"``), never the raw VAE mean. pid runs no VAE; this module only converts between
the raw moment a user's VAE produces and the normalised latent, checks what is about to be handed to a
decoder, and puts noisy latents into the frame the decoder was trained on.

One object per backbone family, all with ``name``, ``channels`` (as handed to PiD), ``raw_channels``,
``vae_factor`` (image pixels per latent cell), ``noise_frame`` ("flow" or "vp"), ``fixed_grid`` and
``normalize(raw) -> z`` / ``denormalize(z) -> raw``:

==============  =================================================  ==========================
name            normalised latent                                  shape for a W×H image
==============  =================================================  ==========================
flux            ``0.3611·(μ − 0.1159)`` (FLUX.1, Z-Image)           [16, H/8, W/8]
sd3             ``1.5305·(μ − 0.0609)``                             [16, H/8, W/8]
sdxl            ``0.13025·μ``  (noisy latents in the VP frame)      [4, H/8, W/8]
qwenimage       ``(μ_c − mean_c)·(1/std_c)``                         [16, H/8, W/8]
flux2           2×2 pack of the 32-ch μ, then BN (eps 1e-4)         [128, H/16, W/16]
dinov2          ``(z − mean)/sqrt(var + 1e-5)``, [768,32,32] stats  [768, 32, 32] always
siglip          affine-free LayerNorm over 1152 (eps 1e-6)          [1152, 16, 16] always
==============  =================================================  ==========================

Arithmetic is float32 (float64 inputs stay float64); outputs keep the input's floating dtype.
"""

from ..errors import LatentError
from .noise import add_noise, euler_to_vp, flow_sigma_after_step, rae_sigma, rae_time_schedule
from .base import FLOW, NOISE_FRAMES, VP, LatentSpace
from .flux2 import Flux2Latent
from .rae import DINOv2Latent, SigLIPLatent, tokens_to_grid
from .registry import ALIASES, LATENT_CLASSES, LATENT_NAMES, check_latent, get_latent_space
from .vae import QWENIMAGE_MEAN, QWENIMAGE_STD, FluxLatent, QwenImageLatent, ScaledLatent, SD3Latent, SDXLLatent

__all__ = [
    "ALIASES", "LatentSpace", "DINOv2Latent", "FLOW", "Flux2Latent", "FluxLatent", "LATENT_CLASSES",
    "LATENT_NAMES", "LatentError", "NOISE_FRAMES", "QWENIMAGE_MEAN", "QWENIMAGE_STD", "QwenImageLatent",
    "SD3Latent", "SDXLLatent", "ScaledLatent", "SigLIPLatent", "VP", "add_noise", "check_latent", "euler_to_vp",
    "flow_sigma_after_step", "get_latent_space", "rae_sigma", "rae_time_schedule", "tokens_to_grid",
]
