"""Early stop without typing a noise level: run the LDM to step K of N (PiD Early-Stop KSampler), or label a latent
that KSamplerAdvanced returned with leftover noise (PiD Latent Noise Level). Both hand PiD Decode a LATENT that
carries the LDM's σ at step K and the model's sampling (flow or ε), from which PiD Decode puts latent and σ into
PiD's frame (`pid.comfyui.latents`). σ is ComfyUI's own: the sigma list KSampler builds for that model, sampler,
scheduler and step count, at index K (what KSamplerAdvanced's `end_at_step=K` stops at)."""

from __future__ import annotations

import comfy.model_sampling
import comfy.samplers
import nodes
from comfy_api.latest import io

from ..errors import PidError
from .latents import NOISE_KEY, noise_record
from .nodes import CATEGORY


def model_sampling_kind(model) -> str:
    """"flow" for ComfyUI's CONST (flow-matching) models, "eps" for ε- and v-prediction (EPS) models."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.CONST):
        return "flow"
    if isinstance(sampling, comfy.model_sampling.EPS):
        return "eps"
    raise PidError(f"the model samples with {type(sampling).__name__}, neither flow matching (FLUX, SD3, Qwen-Image) "
                   "nor ε-prediction (SDXL): PiD has no decoder for its latents")


def stop_sigma(model, sampler_name: str, scheduler: str, steps: int, stop_at_step: int) -> float:
    """ComfyUI's σ after `stop_at_step` of `steps` (0 at the last step), as KSampler computes its schedule."""
    if not 1 <= stop_at_step <= steps:
        raise PidError(f"the LDM stops after step {stop_at_step} of {steps}: choose a step from 1 to {steps}")
    sigmas = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler_name, scheduler=scheduler,
                                     denoise=1.0, model_options=model.model_options).sigmas
    return float(sigmas[min(stop_at_step, len(sigmas) - 1)])


def with_noise_level(latent: dict, model, sampler_name: str, scheduler: str, steps: int, stop_at_step: int) -> dict:
    """A copy of the LATENT dict that records the noise level of a latent stopped after `stop_at_step` of `steps`."""
    out = dict(latent)
    stop = min(stop_at_step, steps)
    out[NOISE_KEY] = noise_record(stop_sigma(model, sampler_name, scheduler, steps, stop), model_sampling_kind(model),
                                  stop, steps)
    return out


class PidEarlyStopKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PidEarlyStopKSampler",
            display_name="PiD Early-Stop KSampler",
            category=CATEGORY,
            description="A KSampler that stops after stop_at_step of steps and returns the still-noisy latent with "
                        "its noise level, for PiD Decode (PiD was trained on latents up to sigma 0.8; the official "
                        "recipe stops FLUX at 24 of 28).",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("steps", default=28, min=1, max=10000),
                io.Int.Input("stop_at_step", default=24, min=1, max=10000,
                             tooltip="The LDM runs this many of its steps; PiD Decode denoises the rest."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image"),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, seed: int, steps: int, stop_at_step: int, cfg: float, sampler_name: str, scheduler: str,
                positive, negative, latent_image: dict) -> io.NodeOutput:
        stop = min(stop_at_step, steps)
        # KSamplerAdvanced's path with end_at_step=stop and return_with_leftover_noise
        (latent,) = nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                          latent_image, denoise=1.0, disable_noise=False, start_step=0,
                                          last_step=stop, force_full_denoise=False)
        return io.NodeOutput(with_noise_level(latent, model, sampler_name, scheduler, steps, stop))


class PidLatentNoiseLevel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PidLatentNoiseLevel",
            display_name="PiD Latent Noise Level",
            category=CATEGORY,
            description="Records the noise level of a latent that KSamplerAdvanced returned with leftover noise "
                        "(return_with_leftover_noise: enable), for PiD Decode. Give the same model, sampler, "
                        "scheduler and steps as the KSamplerAdvanced, and its end_at_step.",
            inputs=[
                io.Model.Input("model"),
                io.Latent.Input("latent"),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
                io.Int.Input("steps", default=28, min=1, max=10000),
                io.Int.Input("end_at_step", default=24, min=1, max=10000),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, latent: dict, sampler_name: str, scheduler: str, steps: int,
                end_at_step: int) -> io.NodeOutput:
        return io.NodeOutput(with_noise_level(latent, model, sampler_name, scheduler, steps, min(end_at_step, steps)))


__all__ = ["PidEarlyStopKSampler", "PidLatentNoiseLevel", "model_sampling_kind", "stop_sigma", "with_noise_level"]
