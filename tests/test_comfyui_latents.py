"""pid.comfyui.latents without ComfyUI: a stopped latent in ComfyUI's frames (its CONST and EPS noise scaling, from
tests/comfyui_stub.py) lands in the frame pid.diffusers hands PiD for a diffusers pipeline at the same σ (the flow
scheduler's latent as it is; SDXL's Euler latent moved to the VP frame), and ComfyUI's latent layouts are read
exactly or refused with a reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pid.comfyui.latents import (NOISE_KEY, family_of, noise_record, normalised_latent, to_comfy_image, to_pid_frame,
                                 to_pid_latent)
from pid.errors import LatentError, PidError
from pid.latents import add_noise, euler_to_vp
from pid.variants import VARIANTS

sys.path.insert(0, str(Path(__file__).parent))
import comfyui_stub  # noqa: E402  (its model-sampling classes only; nothing is installed)

CONST, EPS = comfyui_stub.CONST(), comfyui_stub.EPS()


def _pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)  # x0, ε


@pytest.mark.parametrize("sigma", [0.0, 0.2, 0.55, 0.8, 0.97])
def test_flow_frame_is_the_forward_noising_pid_was_trained_on(sigma):
    x0, eps = _pair((2, 16, 3, 5))
    s = torch.tensor(sigma)
    comfy = CONST.inverse_noise_scaling(s, CONST.noise_scaling(s, eps, x0))  # what KSamplerAdvanced hands back
    z, pid_sigma = to_pid_frame(comfy, sigma, "flow", "flux")
    assert pid_sigma == sigma
    torch.testing.assert_close(z, add_noise(x0, sigma, frame="flow", noise=eps), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 2.0, 14.6])
def test_sdxl_frame_is_the_vp_frame(sigma):
    x0, eps = _pair((1, 4, 3, 5))
    comfy = EPS.noise_scaling(torch.tensor(sigma), eps.clone(), x0)  # x0 + σ·ε, as ComfyUI samples SDXL
    z, pid_sigma = to_pid_frame(comfy, sigma, "eps", "sdxl")
    vp = sigma / (sigma * sigma + 1) ** 0.5
    assert pid_sigma == pytest.approx(vp, rel=1e-12)
    torch.testing.assert_close(z, add_noise(x0, vp, frame="vp", noise=eps), rtol=0, atol=1e-5)


def test_frames_agree_with_the_diffusers_path_at_the_same_step():
    diffusers = pytest.importorskip("diffusers")
    x0, eps = _pair((1, 16, 3, 5), seed=1)
    flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow.set_timesteps(28)
    sigma = float(flow.sigmas[24])  # pid.diffusers: a latent captured after 24 of 28 steps is at sigmas[24]
    pipeline_latent = flow.scale_noise(x0, flow.timesteps[24:25], eps)  # handed to PiD as it is
    s = torch.tensor(sigma)
    z, pid_sigma = to_pid_frame(CONST.inverse_noise_scaling(s, CONST.noise_scaling(s, eps, x0)), sigma, "flow", "sd3")
    assert pid_sigma == sigma
    torch.testing.assert_close(z, pipeline_latent, rtol=0, atol=1e-5)

    x0, eps = _pair((1, 4, 3, 5), seed=2)
    euler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                             timestep_spacing="leading", steps_offset=1)
    euler.set_timesteps(28)
    sigma = float(euler.sigmas[24])
    pipeline_latent = euler.add_noise(x0, eps, euler.timesteps[24:25])  # x0 + σ·ε
    expected, expected_sigma = euler_to_vp(pipeline_latent, sigma)  # what pid.diffusers.generate decodes
    z, pid_sigma = to_pid_frame(EPS.noise_scaling(torch.tensor(sigma), eps.clone(), x0), sigma, "eps", "sdxl")
    assert pid_sigma == pytest.approx(expected_sigma, rel=1e-12)
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)


def test_a_latent_of_another_kind_of_model_is_refused():
    z = torch.zeros(1, 4, 2, 2)
    with pytest.raises(PidError, match="flow-matching model's .* sdxl decoders take SDXL latents"):
        to_pid_frame(z, 0.5, "flow", "sdxl")
    with pytest.raises(PidError, match="ε/v-prediction model's .* flux decoders take flow latents"):
        to_pid_frame(torch.zeros(1, 16, 2, 2), 3.0, "eps", "flux")
    with pytest.raises(PidError, match="stop later"):
        noise_record(1.0, "flow", 1, 28)
    with pytest.raises(PidError, match="sampling must be one of"):
        noise_record(0.5, "x0", 1, 28)


def test_layouts():
    raw = torch.randn(2, 16, 3, 5)
    assert torch.equal(normalised_latent(raw, "flux"), 0.3611 * (raw - 0.1159))
    assert torch.equal(normalised_latent(raw, "sd3"), 1.5305 * (raw - 0.0609))
    assert torch.equal(normalised_latent(raw[:, :4], "sdxl"), 0.13025 * raw[:, :4])
    packed = torch.randn(1, 128, 2, 3)
    assert normalised_latent(packed, "flux2") is packed  # ComfyUI's FLUX.2 format is already PiD's
    assert torch.equal(normalised_latent(raw[:, :, None], "qwenimage"), normalised_latent(raw, "qwenimage"))
    with pytest.raises(LatentError, match="2 frames"):
        normalised_latent(torch.zeros(1, 16, 2, 3, 5), "qwenimage")
    with pytest.raises(LatentError, match="video latent"):
        normalised_latent(torch.zeros(1, 16, 1, 3, 5), "flux")
    with pytest.raises(LatentError, match="packed to 128"):
        normalised_latent(torch.zeros(1, 32, 4, 6), "flux2")
    with pytest.raises(LatentError, match="samples must be a tensor"):
        normalised_latent([torch.zeros(1, 16, 2, 2)], "flux")


def test_to_pid_latent_reads_the_record_and_the_typed_sigma():
    raw = torch.randn(1, 16, 3, 5)
    z, sigma, record = to_pid_latent({"samples": raw}, "flux", 0.25)
    assert sigma == 0.25 and record is None and torch.equal(z, normalised_latent(raw, "flux"))
    stopped = {"samples": raw, NOISE_KEY: noise_record(0.4, "flow", 24, 28)}
    z, sigma, record = to_pid_latent(stopped, "flux")
    assert sigma == 0.4 and record["step"] == 24 and torch.equal(z, normalised_latent(raw, "flux") * 0.6)
    with pytest.raises(PidError, match=r"in \[0, 1\]"):
        to_pid_latent({"samples": raw}, "flux", 1.5)
    with pytest.raises(LatentError, match="expected a ComfyUI LATENT"):
        to_pid_latent(raw, "flux")


def test_family_of_a_decoder():
    class Decoder:
        variant = None

    assert family_of("sd3", Decoder()) == "sd3"
    with pytest.raises(PidError, match="names no released variant"):
        family_of("auto", Decoder())
    Decoder.variant = VARIANTS["qwenimage-v1.5"]
    assert family_of("auto", Decoder()) == "qwenimage"
    with pytest.raises(PidError, match="a decoder of qwenimage latents"):
        family_of("flux", Decoder())
    with pytest.raises(PidError, match="latent_format must be"):
        family_of("dinov2", Decoder())


def test_comfy_image():
    images = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_comfy_image(images)
    assert out.shape == (1, 1, 4, 3) and out.dtype == torch.float32
    assert out[0, 0, :, 0].tolist() == [0.0, 0.25, 0.5, 1.0]
