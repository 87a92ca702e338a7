"""pid.diffusers on tiny random pipelines of every family (built from small configs; text encoders bypassed with
prompt embeddings): the latent handed to PiD is the pipeline's, unpacked as diffusers itself unpacks it, and
`generate(stop_at_step=K)` decodes exactly the latent and σ a step callback observes."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import pid  # noqa: E402
import pid.diffusers as pd  # noqa: E402
from pid.archs import TINY, random_net  # noqa: E402
from pid.errors import LatentError, PidError  # noqa: E402
from pid.latents import euler_to_vp  # noqa: E402
from pid.variants import VARIANTS  # noqa: E402

H, W = 64, 48  # the pipelines' image; PiD decodes it 4x larger
STEPS = 3


def _vae(latent_channels, **config):
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=latent_channels,
                                   norm_num_groups=2, layers_per_block=1, **config)


def _flux2_vae():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), latent_channels=32, norm_num_groups=2,
                                       layers_per_block=1)
    with torch.no_grad():  # batch-norm statistics that are not the identity
        vae.bn.running_mean.copy_(torch.randn(128) * 0.3)
        vae.bn.running_var.copy_(torch.rand(128) * 2 + 0.2)
    return vae


def _flux2_transformer(guidance):
    torch.manual_seed(0)
    return diffusers.Flux2Transformer2DModel(patch_size=1, in_channels=128, num_layers=1, num_single_layers=1,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             timestep_guidance_channels=16, axes_dims_rope=(4, 4, 4, 4),
                                             guidance_embeds=guidance)


def _embeds(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def flux():
    torch.manual_seed(0)
    t = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), transformer=t,
                                  vae=_vae(16, scaling_factor=0.3611, shift_factor=0.1159), text_encoder=None,
                                  tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32), pooled_prompt_embeds=_embeds(1, 32))


def zimage():
    torch.manual_seed(0)
    t = diffusers.ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                           n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16,
                                           axes_dims=[4, 6, 6], axes_lens=[256, 64, 64])
    pipe = diffusers.ZImagePipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), transformer=t,
                                    vae=_vae(16, scaling_factor=0.3611, shift_factor=0.1159), text_encoder=None,
                                    tokenizer=None)
    return pipe, dict(prompt_embeds=[_embeds(8, 16)], guidance_scale=0.0)


def flux2():
    pipe = diffusers.Flux2Pipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(),
                                   transformer=_flux2_transformer(True), text_encoder=None, tokenizer=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32))


def klein():
    pipe = diffusers.Flux2KleinPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(),
                                        transformer=_flux2_transformer(False), text_encoder=None, tokenizer=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32), guidance_scale=1.0)


def sd3():
    torch.manual_seed(0)
    t = diffusers.SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=32, out_channels=16, pos_embed_max_size=32)
    pipe = diffusers.StableDiffusion3Pipeline(transformer=t, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
                                              vae=_vae(16, scaling_factor=1.5305, shift_factor=0.0609),
                                              text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                              text_encoder_3=None, tokenizer_3=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32), pooled_prompt_embeds=_embeds(1, 32), guidance_scale=1.0)


def sdxl():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=32, norm_num_groups=4)
    scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 timestep_spacing="leading", steps_offset=1)
    pipe = diffusers.StableDiffusionXLPipeline(vae=_vae(4, scaling_factor=0.13025), unet=unet, scheduler=scheduler,
                                               text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32), pooled_prompt_embeds=_embeds(1, 32), guidance_scale=1.0)


def qwenimage():
    torch.manual_seed(0)
    t = diffusers.QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                              axes_dims_rope=(4, 6, 6))
    vae = diffusers.AutoencoderKLQwenImage(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                           temperal_downsample=[False, True, True])
    pipe = diffusers.QwenImagePipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, transformer=t,
                                       text_encoder=None, tokenizer=None)
    return pipe, dict(prompt_embeds=_embeds(1, 8, 32), prompt_embeds_mask=torch.ones(1, 8, dtype=torch.long),
                      true_cfg_scale=1.0)


PIPELINES = {"flux": flux, "zimage": zimage, "flux2": flux2, "klein": klein, "sd3": sd3, "sdxl": sdxl,
             "qwenimage": qwenimage}
FAMILY = {"flux": "flux", "zimage": "flux", "flux2": "flux2", "klein": "flux2", "sd3": "sd3", "sdxl": "sdxl",
          "qwenimage": "qwenimage"}
VARIANT = {"flux": "flux-v1.5", "flux2": "flux2-v1.5", "sd3": "sd3-2k", "sdxl": "sdxl-2kto4k",
           "qwenimage": "qwenimage-v1.5"}
CHANNELS = {"flux": dict(), "flux2": dict(lq_latent_channels=128, latent_spatial_down_factor=16,
                                          lq_latent_unpatchify_factor=2), "sd3": dict(), "sdxl": dict(lq_latent_channels=4),
            "qwenimage": dict()}


@pytest.fixture(scope="module", params=list(PIPELINES))
def case(request):
    """(name, pipeline, its call keywords, a tiny PiD decoder of the family's latent space, labelled as its variant)."""
    name = request.param
    pipe, kwargs = PIPELINES[name]()
    pipe.set_progress_bar_config(disable=True)
    family = FAMILY[name]
    net = random_net(TINY.replace(**CHANNELS[family]))
    decoder = pid.PidDecoder(net, variant=VARIANTS[VARIANT[family]])
    return name, pipe, {**kwargs, "height": H, "width": W, "num_inference_steps": STEPS}, decoder


def _run(pipe, kwargs, seed=0, **extra):
    return pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent", **extra)


def _by_diffusers(name, pipe, latents):
    """The normalised latent PiD takes, by diffusers' own unpacking (and, for klein's raw output, the VAE's BN)."""
    if name == "flux":
        return type(pipe)._unpack_latents(latents, H, W, pipe.vae_scale_factor)
    if name == "qwenimage":
        return type(pipe)._unpack_latents(latents, H, W, pipe.vae_scale_factor)[:, :, 0]
    if name in ("flux2", "klein") and latents.ndim == 3:
        h, w = H // (pipe.vae_scale_factor * 2), W // (pipe.vae_scale_factor * 2)
        ids = type(pipe)._prepare_latent_ids(torch.zeros(latents.shape[0], 128, h, w))
        return type(pipe)._unpack_latents_with_ids(latents, ids)
    if name == "klein":  # raw 32-channel output: diffusers' 2x2 patchify, then the VAE's batch norm
        packed = type(pipe)._patchify_latents(latents)
        std = torch.sqrt(pipe.vae.bn.running_var + pipe.vae.config.batch_norm_eps).view(1, -1, 1, 1)
        return (packed - pipe.vae.bn.running_mean.view(1, -1, 1, 1)) / std
    return latents


def test_family(case):
    name, pipe, _, decoder = case
    assert pd.pipeline_family(pipe) == FAMILY[name] == decoder.variant.latent.name


def test_latent_is_the_pipelines_as_diffusers_unpacks_it(case):
    name, pipe, kwargs, _ = case
    latents = _run(pipe, kwargs).images
    ours = pd.to_pid_latent(pipe, latents, H, W)
    expected = _by_diffusers(name, pipe, latents)
    if name == "klein":  # the batch norm is arithmetic: float32 rounding
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(ours, expected)  # pure reshapes
    channels = {"flux": 16, "flux2": 128, "sd3": 16, "sdxl": 4, "qwenimage": 16}[FAMILY[name]]
    down = 16 if FAMILY[name] == "flux2" else 8
    assert ours.shape == (1, channels, H // down, W // down)


@pytest.mark.parametrize("name", ["flux", "qwenimage", "flux2"])
def test_packing_round_trips_with_diffusers(name):
    pipe, _ = PIPELINES[name]()
    h, w = pd.latent_grid(pipe, H, W)
    if name == "flux2":
        grid = torch.randn(2, 128, h // 2, w // 2)
        tokens = type(pipe)._pack_latents(grid)
        assert torch.equal(pd.to_pid_latent(pipe, tokens, H, W), grid)
        return
    grid = torch.randn(2, 16, h, w)
    tokens = type(pipe)._pack_latents(grid, 2, 16, h, w)
    assert torch.equal(pd.to_pid_latent(pipe, tokens, H, W), grid)


def test_decode_equals_the_decoder_on_the_hand_normalised_latent(case):
    name, pipe, kwargs, decoder = case
    latents = _run(pipe, kwargs).images
    y = torch.randn(12, 32, generator=torch.Generator().manual_seed(2))
    ours = pd.decode(pipe, decoder, latents, height=H, width=W, sigma=0.1, caption_embeds=y, seed=3, progress=False)
    by_hand = decoder.decode(pd.to_pid_latent(pipe, latents, H, W), sigma=0.1, caption_embeds=y, seed=3,
                             progress=False)
    assert torch.equal(ours, by_hand)
    assert ours.shape == (1, 3, 4 * H, 4 * W)


@pytest.mark.parametrize("stop", [1, 2])
def test_generate_decodes_what_a_callback_observes(case, stop):
    name, pipe, kwargs, decoder = case
    seen = {}

    def observe(pipeline, step, timestep, callback_kwargs):
        if step + 1 == stop:
            seen["latents"] = callback_kwargs["latents"].clone()
            seen["sigma"] = float(pipeline.scheduler.sigmas[stop])
        return callback_kwargs

    _run(pipe, kwargs, callback_on_step_end=observe, callback_on_step_end_tensor_inputs=["latents"])
    y = torch.randn(12, 32, generator=torch.Generator().manual_seed(2))
    result = pd.generate(pipe, decoder, stop_at_step=stop, caption_embeds=y, **kwargs,
                         generator=torch.Generator().manual_seed(0), decode_kwargs=dict(seed=5, output="tensor"))
    latent = pd.to_pid_latent(pipe, seen["latents"], H, W)
    sigma = torch.full((1,), seen["sigma"], dtype=torch.float64)
    if FAMILY[name] == "sdxl":
        latent, sigma = euler_to_vp(latent, sigma)  # Euler's frame (sigma up to ~15) to the VP frame
        assert float(sigma) < seen["sigma"]
    assert torch.equal(result.latent, latent)
    assert torch.equal(result.sigma, sigma.float()) and 0 < float(result.sigma) < 1
    assert result.stopped_at_step == stop
    assert torch.equal(result.images, decoder.decode(latent, sigma=result.sigma, caption_embeds=y, seed=5,
                                                     progress=False))


def test_generate_to_the_end(case):
    name, pipe, kwargs, decoder = case
    y = torch.randn(12, 32, generator=torch.Generator().manual_seed(2))
    result = pd.generate(pipe, decoder, caption_embeds=y, **kwargs, generator=torch.Generator().manual_seed(0),
                         decode_kwargs=dict(seed=5, progress=False))
    final = _run(pipe, kwargs).images
    assert torch.equal(result.sigma, torch.zeros(1)) and result.stopped_at_step == STEPS
    torch.testing.assert_close(result.latent, pd.to_pid_latent(pipe, final, H, W), rtol=0, atol=0)
    assert len(result.images) == 1 and result.images[0].size == (4 * W, 4 * H)  # PIL, width x height


def test_wrong_family_and_unknown_pipelines():
    pipe, kwargs = flux()
    sd3_decoder = pid.PidDecoder(random_net(TINY), variant=VARIANTS["sd3-2k"])
    with pytest.raises(PidError, match="makes flux latents but the decoder is 'sd3-2k'.*flux-v1.5"):
        pd.decode(pipe, sd3_decoder, torch.zeros(1, 12, 64), height=H, width=W, caption_embeds=torch.zeros(12, 32))

    class VideoPipeline:
        pass

    with pytest.raises(PidError, match="VideoPipeline is not a pipeline pid knows"):
        pd.pipeline_family(VideoPipeline())


def test_vae_normalisation_is_checked_not_assumed():
    pipe, _ = flux()
    pipe.register_modules(vae=_vae(16, scaling_factor=0.18215))  # an SD-1.5-like VAE: another latent space
    with pytest.raises(LatentError, match="scaling_factor 0.18215"):
        pd.to_pid_latent(pipe, torch.zeros(1, 12, 64), H, W)


def test_generate_needs_a_caption_and_a_size():
    pipe, kwargs = flux()
    decoder = pid.PidDecoder(random_net(TINY), variant=VARIANTS["flux-v1.5"])
    with pytest.raises(PidError, match="height= and width="):
        pd.generate(pipe, decoder, **kwargs)
    with pytest.raises(PidError, match="without prompt="):
        pd.generate(pipe, decoder, **kwargs, height=H, width=W)
    with pytest.raises(PidError, match="stop_at_step must be"):
        pd.generate(pipe, decoder, stop_at_step=9, **kwargs, height=H, width=W, num_inference_steps=STEPS,
                    caption_embeds=torch.zeros(12, 32))
    assert pd._captions_of({"prompt": ["a", "b"], "num_images_per_prompt": 2}) == ["a", "a", "b", "b"]


def test_cli_generate(tmp_path, monkeypatch, tiny_checkpoint):
    """`pid generate` runs the pipeline it loads (here the tiny FLUX.1 one, its prompt encoder replaced: there is no
    text model offline) and writes what pid.diffusers.generate returns."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    from pid.cli import main
    from pid.images import to_pixels

    pipe, kwargs = flux()
    pipe.set_progress_bar_config(disable=True)
    text_ids = torch.zeros(8, 3)
    monkeypatch.setattr(pipe, "encode_prompt", lambda **kw: (kwargs["prompt_embeds"], kwargs["pooled_prompt_embeds"],
                                                             text_ids))
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda *a, **kw: pipe)
    y = torch.randn(12, 32, generator=torch.Generator().manual_seed(2))
    save_file({"y": y}, str(tmp_path / "y.safetensors"))
    args = ["generate", "--pipeline", "tiny-flux", "--prompt", "a fox", "--height", str(H), "--width", str(W),
            "--steps", str(STEPS), "--stop-at-step", "2", "--checkpoint", str(tiny_checkpoint.safetensors),
            "--config", str(tiny_checkpoint.config_json), "--caption-embeds", str(tmp_path / "y.safetensors"),
            "--seed", "7", "--out", str(tmp_path / "fox.png")]
    assert main(args) == 0
    decoder = pid.load(tiny_checkpoint.safetensors, config=tiny_checkpoint.kwargs)
    expected = pd.generate(pipe, decoder, stop_at_step=2, caption_embeds=y, prompt="a fox", height=H, width=W,
                           num_inference_steps=STEPS, generator=torch.Generator().manual_seed(7),
                           decode_kwargs=dict(seed=7, output="tensor"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fox.png")), to_pixels(expected.images)[0].numpy())
    assert main([*args[:-2], "--stop-at-step", "9", "--out", str(tmp_path / "x.png")]) == 2  # a one-line error
