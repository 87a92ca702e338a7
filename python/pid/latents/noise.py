"""Noise frames of latents captured before the LDM's last step (still noisy): σ after k steps of a flow scheduler,
SDXL's Euler frame to the VP frame its decoder was trained in, the RAE's time schedule, and forward noising."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from ..errors import LatentError
from .base import FLOW, NOISE_FRAMES, compute_dtype, out_dtype, require_tensor

SigmaLike = Union[float, int, Sequence[float], torch.Tensor]
RAE_SHIFT_BASE = 4096  # RAE's dimension shift: s = sqrt(C·H·W / 4096)


def flow_sigma_after_step(sigmas: Union[Sequence[float], torch.Tensor], k: int) -> float:
    """σ of a latent captured after `k` transformer evaluations of a diffusers flow-matching scheduler:
    `sigmas[k]` (the already-shifted σ; in `callback_on_step_end` that is step_index = k − 1).
    k = len(sigmas) − 1 is the final clean latent, σ = sigmas[-1] (0 for diffusers schedules)."""
    seq = sigmas.detach().reshape(-1).tolist() if isinstance(sigmas, torch.Tensor) else [float(s) for s in sigmas]
    if not seq:
        raise LatentError("flow_sigma_after_step: the sigma schedule is empty; pass pipe.scheduler.sigmas after "
                          "set_timesteps (length num_inference_steps + 1)")
    k = int(k)
    if not 0 <= k <= len(seq) - 1:
        raise LatentError(f"flow_sigma_after_step: k = {k} transformer evaluations is outside 0..{len(seq) - 1} "
                          f"for a schedule of {len(seq)} sigmas ({len(seq) - 1} steps)")
    return float(seq[k])


def _sigma_vector(sigma: SigmaLike, batch: int, what: str = "sigma") -> tuple[torch.Tensor, bool]:
    """σ as a float64 CPU vector of length `batch` (a scalar broadcasts), and whether it was a scalar."""
    if isinstance(sigma, torch.Tensor):
        s = sigma.detach().to("cpu", torch.float64)
    else:
        try:
            s = torch.as_tensor(sigma, dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise LatentError(f"{what} must be a float, a list of floats or a [B] tensor, got {sigma!r}") from e
    scalar = s.ndim == 0
    s = s.reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch)
    elif s.ndim != 1 or s.numel() != batch:
        raise LatentError(f"{what} has {s.numel()} values for a batch of {batch}; give one per sample or one for all")
    if not torch.isfinite(s).all():
        raise LatentError(f"{what} contains NaN/Inf: {s.tolist()}")
    return s.contiguous(), scalar


def euler_to_vp(latent: torch.Tensor, sigma_euler: SigmaLike) -> tuple[torch.Tensor, Union[float, torch.Tensor]]:
    """SDXL EulerDiscreteScheduler latent `x_eu = z + σ·ε` -> the VP frame the SDXL PiD decoder was trained on:
    `x_vp = x_eu / sqrt(σ² + 1)`, `σ_vp = σ / sqrt(σ² + 1)` (identity at σ = 0).

    `sigma_euler` per sample (float, list or [B] tensor). Returns σ_vp as a float for a scalar σ, else a float32
    [B] tensor on the latent's device. The latent keeps its dtype."""
    latent = require_tensor(latent, "latent")
    if latent.ndim < 1:
        raise LatentError("euler_to_vp: latent must have a batch dimension [B, C, h, w]")
    s, scalar = _sigma_vector(sigma_euler, latent.shape[0], "sigma_euler")
    if (s < 0).any():
        raise LatentError(f"euler_to_vp: Euler sigmas are ≥ 0, got {s.tolist()}")
    denom = torch.sqrt(s * s + 1.0)
    sigma_vp = s / denom
    cd = compute_dtype(latent)
    d = denom.to(cd).to(latent.device).view(-1, *([1] * (latent.ndim - 1)))
    out = (latent.to(cd) / d).to(out_dtype(latent))
    if scalar:
        return out, float(sigma_vp[0])
    return out, sigma_vp.to(device=latent.device, dtype=torch.float32)


def rae_time_schedule(steps: int, shape: Sequence[int] = (768, 32, 32)) -> torch.Tensor:
    """The RAE ODE time schedule, steps + 1 float32 values from ≈1 (noise) down to ≈0:
    `t = s·u / (1 + (s − 1)·u)`, `u = 1 − linspace(0, 1 − 1/1000, steps + 1)`, `s = sqrt(C·H·W / 4096)`."""
    steps = int(steps)
    if steps < 1:
        raise LatentError(f"rae_time_schedule: steps must be ≥ 1, got {steps}")
    dims = tuple(int(d) for d in shape)
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise LatentError(f"rae_time_schedule: shape must be the latent's (C, H, W) or (B, C, H, W), "
                          f"got {tuple(shape)}")
    c, h, w = dims[-3:]
    s = math.sqrt(c * h * w / RAE_SHIFT_BASE)
    u = 1.0 - torch.linspace(0.0, 1.0 - 1.0 / 1000, steps + 1)
    return s * u / (1 + (s - 1) * u)


def rae_sigma(step: int, steps: int, shape: Sequence[int] = (768, 32, 32)) -> float:
    """σ label of a DINOv2-RAE latent captured at ODE step `step` of `steps` (0 = pure noise): the RAE ODE time
    with RAE's dimension shift. The last step (step = steps) is ≈0.0137 for [768, 32, 32], not 0."""
    step = int(step)
    if not 0 <= step <= int(steps):
        raise LatentError(f"rae_sigma: step {step} is outside 0..{steps}")
    return float(rae_time_schedule(steps, shape)[step])


def add_noise(latent: torch.Tensor, sigma: SigmaLike, generator: Optional[torch.Generator] = None,
              frame: str = FLOW, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Forward-noise a clean normalised latent to σ, as the reference `decoder.add_noise` does:
    flow `(1 − σ)·z + σ·ε`, vp `sqrt(max(0, 1 − σ²))·z + σ·ε` (SDXL).

    σ per sample (float, list or [B] tensor), each in [0, 1]. Samples with σ ≤ 0 are returned exactly; when every
    σ ≤ 0 the latent itself is returned and no noise is drawn. ε ~ N(0, 1) is drawn in float32 with the shape
    of the latent from `generator` (which must live on the latent's device), or injected with `noise=`. The
    coefficients are rounded to float32 like the reference's Python scalars; the math is float32 and the
    result has the latent's dtype. Note the reference draws per sample with a generator seeded `seed + idx`;
    for bit parity with it inject that noise."""
    latent = require_tensor(latent, "latent")
    if not latent.is_floating_point():
        raise LatentError(f"add_noise: latent has dtype {latent.dtype}; expected a floating-point latent")
    if frame not in NOISE_FRAMES:
        raise LatentError(f"add_noise: frame must be 'flow' or 'vp' (SDXL), got {frame!r}; "
                          "get_latent_space(name).noise_frame gives the right one")
    if latent.ndim < 1 or latent.shape[0] == 0:
        raise LatentError(f"add_noise: latent must be batched [B, C, h, w], got shape {tuple(latent.shape)}")
    s, _ = _sigma_vector(sigma, latent.shape[0])
    if (s > 1).any():
        raise LatentError(f"add_noise: σ must lie in [0, 1], got {s.tolist()}; an SDXL Euler σ (up to ~15) must be "
                          "converted with euler_to_vp first")
    active = s > 0
    if not bool(active.any()):
        return latent
    cd = compute_dtype(latent)
    if noise is None:
        if generator is not None and generator.device.type != latent.device.type:
            raise LatentError(f"add_noise: the generator is on {generator.device} but the latent on {latent.device}; "
                              f"create it with torch.Generator(device={str(latent.device)!r})")
        eps = torch.randn(latent.shape, generator=generator, device=latent.device, dtype=torch.float32).to(cd)
    else:
        noise = require_tensor(noise, "noise")
        if tuple(noise.shape) != tuple(latent.shape):
            raise LatentError(f"add_noise: noise has shape {tuple(noise.shape)}, the latent {tuple(latent.shape)}; "
                              "they must match")
        eps = noise.to(device=latent.device, dtype=cd)
    if frame == FLOW:
        a = 1.0 - s
    else:
        a = torch.sqrt(torch.clamp(1.0 - s * s, min=0.0))
    view = (-1,) + (1,) * (latent.ndim - 1)
    a_t = a.to(cd).to(latent.device).view(view)  # float64 -> float32 rounds like a Python scalar operand
    s_t = s.to(cd).to(latent.device).view(view)
    z = latent.to(cd)
    out = a_t * z + s_t * eps
    if not bool(active.all()):
        out = torch.where(active.to(latent.device).view(view), out, z)
    return out.to(latent.dtype)
