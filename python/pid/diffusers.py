"""PiD inside a diffusers pipeline: the library form of the official `from_ldm` script (`pip install 'pid-decoder[diffusers]'`).

`to_pid_latent` turns a pipeline's latents into the normalised latent PiD decodes; `decode` decodes them; `generate`
runs the pipeline, optionally stops it after K transformer evaluations (PiD decodes the still-noisy latent with its
noise level), and decodes. Families and what their pipelines hand over (`output_type="latent"`, or a step callback):

============================  ==================  =============================================================
pipeline                      PiD latent space    latents → PiD
============================  ==================  =============================================================
FluxPipeline                  flux                2×2-packed tokens [B, h/2·w/2, 64] → unpacked [B, 16, h, w]
ZImagePipeline                flux                [B, 16, h, w] as they are
Flux2Pipeline                 flux2               tokens [B, h·w, 128] (packed, batch-normalised) → [B, 128, h, w]
Flux2KleinPipeline            flux2               as Flux2 while it runs; its final output is the raw 32-channel
                                                  latent, packed and batch-normalised with the VAE's statistics
StableDiffusion3Pipeline      sd3                 [B, 16, h, w] as they are
StableDiffusionXLPipeline     sdxl                [B, 4, h, w]; a noisy latent moves from Euler's frame to VP's
QwenImagePipeline             qwenimage           2×2-packed tokens [B, h/2·w/2, 64] → [B, 16, h, w]
============================  ==================  =============================================================

The pipelines' latents are already in the normalisation PiD takes (their VAE's scale / shift, per-channel statistics
or batch norm, the same constants): this is checked against the pipeline's VAE, never assumed. PiD has no decoder for
other latent spaces (e.g. SD 1.x / 2.x, Wan, HunyuanVideo): `pipeline_family` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .errors import LatentError, PidError
from .latents import Flux2Latent, QwenImageLatent, euler_to_vp, get_latent_space

log = logging.getLogger(__name__)

PIPELINE_FAMILIES = {  # pipeline class name -> the PiD latent space of its latents
    "FluxPipeline": "flux",
    "ZImagePipeline": "flux",
    "Flux2Pipeline": "flux2",
    "Flux2KleinPipeline": "flux2",
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusionXLPipeline": "sdxl",
    "QwenImagePipeline": "qwenimage",
}


def pipeline_family(pipe: Any) -> str:
    """The PiD latent space ("flux", "flux2", "sd3", "sdxl", "qwenimage") of a diffusers pipeline's latents."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[cls.__name__]
    raise PidError(f"{type(pipe).__name__} is not a pipeline pid knows ({', '.join(PIPELINE_FAMILIES)}): PiD has "
                   "decoders for the FLUX.1 / Z-Image, FLUX.2, SD3, SDXL and Qwen-Image latent spaces. For another "
                   "pipeline of one of these families pass family= ('flux', 'flux2', 'sd3', 'sdxl', 'qwenimage')")


def latent_grid(pipe: Any, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the VAE latent of a height × width image in this pipeline (what its packing assumes)."""
    f = int(getattr(pipe, "vae_scale_factor", 8))
    return 2 * (int(height) // (f * 2)), 2 * (int(width) // (f * 2))


def to_pid_latent(pipe: Any, latents: torch.Tensor, height: int, width: int, *,
                  family: Optional[str] = None) -> torch.Tensor:
    """A pipeline's latents (its `output_type="latent"` output, or `callback_kwargs["latents"]` during a run) → the
    normalised latent [B, C, h, w] PiD decodes, for an image of height × width pixels. Exact: only reshapes, except the
    FLUX.2-klein final output, which is batch-normalised with the pipeline's VAE statistics."""
    family = family or pipeline_family(pipe)
    if not isinstance(latents, torch.Tensor):
        raise LatentError(f"latents must be a torch.Tensor (the pipeline's output_type='latent' output), got "
                          f"{type(latents).__name__}")
    h, w = latent_grid(pipe, height, width)
    if family == "flux":
        _check_scaled_vae(pipe, get_latent_space("flux"))
        return _unpack_2x2(latents, h, w, "FLUX.1") if latents.ndim == 3 else _as_4d(latents, 16, "FLUX.1 / Z-Image")
    if family == "flux2":
        if latents.ndim == 3:  # tokens of the packed, batch-normalised latent, row-major over the /16 grid
            return _tokens_to_grid(latents, h // 2, w // 2, 128, "FLUX.2")
        if latents.ndim == 4 and latents.shape[1] == 32:  # Flux2KleinPipeline's raw output
            return _flux2_space(pipe).normalize(latents)
        return _as_4d(latents, 128, "FLUX.2")
    if family == "sd3":
        _check_scaled_vae(pipe, get_latent_space("sd3"))
        return _as_4d(latents, 16, "SD3")
    if family == "sdxl":
        _check_scaled_vae(pipe, get_latent_space("sdxl"))
        return _as_4d(latents, 4, "SDXL")
    if family == "qwenimage":
        _check_qwen_vae(pipe)
        if latents.ndim == 3:
            return _unpack_2x2(latents, h, w, "Qwen-Image")
        if latents.ndim == 5 and latents.shape[2] == 1:  # the video-VAE layout [B, C, 1, h, w]
            latents = latents[:, :, 0]
        return _as_4d(latents, 16, "Qwen-Image")
    raise PidError(f"family must be 'flux', 'flux2', 'sd3', 'sdxl' or 'qwenimage', got {family!r}")


def decode(pipe: Any, decoder, latents: torch.Tensor, *, height: int, width: int,
           sigma: "float | Sequence[float] | torch.Tensor" = 0.0, caption=None, caption_embeds=None, **decode_kwargs):
    """PiD images of a pipeline's latents (as `to_pid_latent` takes them) at noise level `sigma` (in the variant's
    frame; `generate` converts SDXL's), in the form `output=` asks for; every other keyword goes to
    `PidDecoder.decode`. The decoder must be of the pipeline's family."""
    check_decoder(pipe, decoder)
    latent = to_pid_latent(pipe, latents, height, width)
    return decoder.decode(latent, sigma=sigma, caption=caption, caption_embeds=caption_embeds, **decode_kwargs)


def check_decoder(pipe: Any, decoder) -> None:
    """PidError unless the decoder takes the pipeline's latent space (a decoder without a registry variant is only
    checked by its latent channels, when it decodes)."""
    family = pipeline_family(pipe)
    variant = getattr(decoder, "variant", None)
    if variant is not None and variant.latent.name != family:
        from .variants import VARIANTS

        fits = ", ".join(v.name for v in VARIANTS.values() if v.latent.name == family)
        raise PidError(f"{type(pipe).__name__} makes {family} latents but the decoder is {variant.name!r}, for "
                       f"{variant.latent.name} latents; load one of: {fits}")


@dataclass
class PidGeneration:
    """What `generate` returns: the PiD images, the normalised latent they were decoded from, and its noise level."""

    images: Any  # PIL images (or what decode_kwargs["output"] asks for)
    latent: torch.Tensor  # [B, C, h, w], the normalised PiD latent that was decoded
    sigma: torch.Tensor  # [B] float32, its noise level in the decoder's frame (0 for a finished latent)
    stopped_at_step: int  # transformer evaluations the pipeline ran


def generate(pipe: Any, decoder, *, stop_at_step: Optional[int] = None, caption=None, caption_embeds=None,
             decode_kwargs: Optional[dict] = None, **pipe_kwargs) -> PidGeneration:
    """Run the pipeline (`pipe(**pipe_kwargs, output_type="latent")`) and decode its latent with PiD.

    `stop_at_step=K` stops the pipeline after K transformer evaluations and decodes the latent it then holds, with
    its noise level σ = `scheduler.sigmas[K]` (SDXL: moved to the VP frame its decoder was trained in); PiD was
    trained on σ up to 0.8, and the official README captures at 85–92 % of the schedule (e.g. FLUX step 24 of 28).
    None runs the pipeline to the end (σ = 0). `height` and `width` must be among `pipe_kwargs` (PiD's image is
    4× larger). The caption defaults to the prompt (as the official `from_ldm` does), encoded with Gemma-2
    (`pip install 'pid-decoder[text]'`), or pass `caption_embeds`. `decode_kwargs` go to `PidDecoder.decode`."""
    check_decoder(pipe, decoder)
    height, width = pipe_kwargs.get("height"), pipe_kwargs.get("width")
    if height is None or width is None:
        raise PidError("generate needs height= and width= (the pipeline's image size; PiD decodes its latent into an "
                       "image 4x larger on each side)")
    steps = pipe_kwargs.get("num_inference_steps")
    if stop_at_step is not None:
        if not isinstance(stop_at_step, int) or stop_at_step < 1 or (steps is not None and stop_at_step > steps):
            raise PidError(f"stop_at_step must be a number of transformer evaluations in 1..num_inference_steps "
                           f"({steps if steps is not None else 'the pipeline default'}), got {stop_at_step!r}")
    if caption is None and caption_embeds is None:
        caption = _captions_of(pipe_kwargs)
    family = pipeline_family(pipe)
    captured: dict[str, Any] = {}
    user_callback = pipe_kwargs.pop("callback_on_step_end", None)
    inputs = list(pipe_kwargs.pop("callback_on_step_end_tensor_inputs", None) or [])

    def capture(pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
        if user_callback is not None:
            callback_kwargs = user_callback(pipeline, step, timestep, callback_kwargs) or callback_kwargs
        if stop_at_step is not None and step + 1 == stop_at_step:
            captured["latents"] = callback_kwargs["latents"].detach().clone()
            captured["sigma"] = float(pipeline.scheduler.sigmas[stop_at_step])
            pipeline._interrupt = True  # the loop skips the remaining steps
        return callback_kwargs

    output = pipe(**pipe_kwargs, output_type="latent", callback_on_step_end=capture,
                  callback_on_step_end_tensor_inputs=sorted({"latents", *inputs}))
    if stop_at_step is not None and "latents" not in captured:
        raise PidError(f"stop_at_step={stop_at_step}, but the pipeline ran only {len(pipe.scheduler.sigmas) - 1} "
                       "transformer evaluations (num_inference_steps)")
    if stop_at_step is None:
        latents = output.images if hasattr(output, "images") else output[0]
        sigma_value = float(pipe.scheduler.sigmas[-1])
        stopped = len(pipe.scheduler.sigmas) - 1
    else:
        latents, sigma_value, stopped = captured["latents"], captured["sigma"], stop_at_step
    latent = to_pid_latent(pipe, latents, height, width)
    sigma = torch.full((latent.shape[0],), sigma_value, dtype=torch.float64)
    if family == "sdxl":  # EulerDiscreteScheduler's x = z + σ·ε → the VP frame x / sqrt(σ² + 1)
        latent, sigma = euler_to_vp(latent, sigma)
    sigma = sigma.to(torch.float32).cpu()
    log.info("%s: decoding the latent after %d transformer evaluations, sigma %.4f", type(pipe).__name__, stopped,
             float(sigma[0]))
    kwargs = {"output": "pil", **(decode_kwargs or {})}
    images = decoder.decode(latent, sigma=sigma, caption=caption, caption_embeds=caption_embeds, **kwargs)
    return PidGeneration(images, latent, sigma, stopped)


# ---------------------------------------------------------------------------------------------- helpers
def _captions_of(pipe_kwargs: dict) -> list[str]:
    """The pipeline's prompt per generated image (each prompt num_images_per_prompt times, as diffusers batches)."""
    prompt = pipe_kwargs.get("prompt")
    if prompt is None:
        raise PidError("PiD needs a caption: the pipeline was called without prompt= (prompt_embeds only), so pass "
                       "caption= (text) or caption_embeds= (Gemma-2 embeddings, see `pid encode-caption`)")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    n = int(pipe_kwargs.get("num_images_per_prompt") or 1)
    return [p for p in prompts for _ in range(n)]


def _as_4d(latents: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    if latents.ndim != 4 or latents.shape[1] != channels:
        raise LatentError(f"{what} latents must be [B, {channels}, h, w] here, got shape {tuple(latents.shape)}")
    return latents


def _unpack_2x2(tokens: torch.Tensor, h: int, w: int, what: str) -> torch.Tensor:
    """Tokens [B, (h/2)·(w/2), 4C] of the 2×2-packed latent (token row-major over the /2 grid; feature c·4 + 2i + j)
    → [B, C, h, w]."""
    B, n, c4 = tokens.shape
    if n != (h // 2) * (w // 2) or c4 % 4:
        raise LatentError(f"{what}: {n} packed tokens of {c4} features do not make a {h}x{w} latent "
                          f"({(h // 2) * (w // 2)} tokens of 4 x C features): check height= and width=")
    x = tokens.reshape(B, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, c4 // 4, h, w)


def _tokens_to_grid(tokens: torch.Tensor, h: int, w: int, channels: int, what: str) -> torch.Tensor:
    B, n, c = tokens.shape
    if n != h * w or c != channels:
        raise LatentError(f"{what}: {n} tokens of {c} features do not make a {h}x{w} grid of {channels} channels: "
                          "check height= and width=")
    return tokens.reshape(B, h, w, c).permute(0, 3, 1, 2)


def _flux2_space(pipe: Any) -> Flux2Latent:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "bn"):
        raise LatentError("a raw 32-channel FLUX.2 latent is normalised with the VAE's batch-norm statistics, and this "
                          "pipeline has no FLUX.2 VAE (pipe.vae)")
    return Flux2Latent(vae.bn.running_mean, vae.bn.running_var, eps=float(vae.config.batch_norm_eps))


def _check_scaled_vae(pipe: Any, space) -> None:
    """The pipeline's VAE normalises z = scale·(μ − shift) with the constants of PiD's latent space."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        log.warning("%s has no VAE to check its latent normalisation against; taking the %s constants",
                    type(pipe).__name__, space.title)
        return
    scale, shift = vae.config.scaling_factor, vae.config.get("shift_factor", None) or 0.0
    if (scale, shift) != (space.scale, space.shift):
        raise LatentError(f"{type(pipe).__name__}'s VAE normalises with scaling_factor {scale} and shift_factor "
                          f"{shift}, but PiD's {space.title} decoders were trained on {space.scale} and {space.shift}: "
                          "a different latent space, which no PiD decoder takes")


def _check_qwen_vae(pipe: Any) -> None:
    """The pipeline's VAE normalises per channel with Qwen-Image's statistics."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        log.warning("%s has no VAE to check its latent statistics against; taking Qwen-Image's", type(pipe).__name__)
        return
    space = QwenImageLatent()
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is None or std is None or not (torch.equal(torch.tensor(mean, dtype=torch.float32), space.mean)
                                           and torch.equal(torch.tensor(std, dtype=torch.float32), space.std)):
        raise LatentError(f"{type(pipe).__name__}'s VAE has other latent statistics than Qwen-Image's, on which PiD's "
                          "Qwen-Image decoders were trained: a latent space no PiD decoder takes")


__all__ = ["PIPELINE_FAMILIES", "PidGeneration", "check_decoder", "decode", "generate", "latent_grid",
           "pipeline_family", "to_pid_latent"]
