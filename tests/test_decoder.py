"""PidDecoder.decode: the whole pipeline on the tiny test network (pid.archs.TINY), against the pipeline assembled by
hand from the golden-tested pieces (network + sampler)."""

import logging

import numpy as np
import pytest
import torch

import pid
from pid import latents, sampling


@pytest.fixture(scope="module")
def io():
    """A synthetic decode: 2 latents of 2 × 3 cells (64 × 96 pixels), per-sample σ, caption embeddings, noises."""
    g = torch.Generator().manual_seed(11)
    B, H, W = 2, 64, 96
    return {"lq_latent": torch.randn(B, 16, 2, 3, generator=g), "degrade_sigma": torch.tensor([0.0, 0.4]),
            "y": torch.randn(B, 10, 32, generator=g), "noise": torch.randn(B, 3, H, W, generator=g),
            **{f"eps_{k}": torch.randn(B, 3, H, W, generator=g) for k in (1, 2, 3)}}


@pytest.fixture(scope="module")
def decoder(tiny_checkpoint):
    return pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs, precision="float32")


def _bf16(t):
    return t.to(torch.bfloat16).float()


def _reference_student(decoder, io, latent, noise, eps, steps=4):
    """The pipeline assembled by hand from the golden-tested pieces (network + sampler). Every sample is at the same
    time, so the timestep work is done for one sample and broadcast, as the decoder does."""
    net = decoder.net
    H, W = noise.shape[-2:]
    B = noise.shape[0]
    with torch.no_grad():
        cond = net.encode_condition(_bf16(latent), io["degrade_sigma"], (H // 16, W // 16))
        text = net.encode_text(io["y"])
        return sampling.sample_student(lambda x, t, step: net.velocity(x, net.encode_time(t[:1] * 1000).expand(B), text, cond),
                                       noise, steps=steps, step_noises=eps).clamp(-1, 1)


def test_decode_equals_hand_assembled_pipeline(decoder, io):
    eps = [io[f"eps_{k}"] for k in (1, 2, 3)]
    out = decoder.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"], noise=io["noise"],
                         step_noises=eps, progress=False)
    assert out.shape == io["noise"].shape and out.abs().max() <= 1
    assert torch.equal(out, _reference_student(decoder, io, io["lq_latent"], io["noise"], eps))


def test_decode_of_a_bf16_latent(decoder, io):
    """decode rounds latents to bf16 like the reference entry points: a bf16-representable latent is decoded as is."""
    eps = [io[f"eps_{k}"] for k in (1, 2, 3)]
    lat = _bf16(io["lq_latent"])
    out = decoder.decode(lat, sigma=io["degrade_sigma"], caption_embeds=io["y"], noise=io["noise"],
                         step_noises=eps, progress=False)
    assert torch.equal(out, _reference_student(decoder, io, lat, io["noise"], eps))


def test_seed_and_generator_draw_order(decoder, io):
    kw = dict(sigma=io["degrade_sigma"], caption_embeds=io["y"], progress=False)
    a = decoder.decode(io["lq_latent"], seed=7, **kw)
    assert torch.equal(a, decoder.decode(io["lq_latent"], seed=7, **kw))
    assert not torch.equal(a, decoder.decode(io["lq_latent"], seed=8, **kw))
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(io["noise"].shape, generator=gen)  # draw #0: the initial noise
    eps = [torch.randn(io["noise"].shape, generator=gen) for _ in range(3)]  # then one per re-noise
    assert torch.equal(a, _reference_student(decoder, io, io["lq_latent"], noise, eps))


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_other_step_counts(decoder, io, steps):
    # The reference's step-count rule (sampling.student_schedule), with one draw per re-noise from the seed's stream.
    out = decoder.decode(io["lq_latent"], sigma=0.2, caption_embeds=io["y"][:1], steps=steps, seed=0, progress=False)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(io["noise"].shape, generator=gen)
    draws = sum(1 for t in sampling.student_schedule(steps).tolist()[1:] if t > 0)
    eps = [torch.randn(io["noise"].shape, generator=gen) for _ in range(draws)]
    io_02 = {**io, "degrade_sigma": torch.full((2,), 0.2), "y": io["y"][:1].expand(2, -1, -1)}
    assert torch.equal(out, _reference_student(decoder, io_02, io["lq_latent"], noise, eps, steps=steps))
    assert not torch.equal(out, decoder.decode(io["lq_latent"], sigma=0.2, caption_embeds=io["y"][:1], seed=0,
                                               progress=False))  # not the 4-step decode


def test_teacher_sampler_with_cfg(decoder, io):
    y_null = torch.randn_like(io["y"][:1])
    out = decoder.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"],
                         negative_caption_embeds=y_null, sampler="dpm++2m", steps=3, cfg_scale=4.0, shift=3.0,
                         noise=io["noise"], progress=False)
    net = decoder.net
    with torch.no_grad():
        cond = net.encode_condition(_bf16(io["lq_latent"]), io["degrade_sigma"], (4, 6))
        tc, tu = net.encode_text(io["y"]), net.encode_text(y_null.expand(2, -1, -1))

        def guided(x, t, step):
            time = net.encode_time(t[:1] * 1000).expand(x.shape[0])  # one sample's, broadcast: as the decoder
            vu = net.velocity(x, time, tu, cond)
            return vu + 4.0 * (net.velocity(x, time, tc, cond) - vu)
        ref = sampling.sample_dpmpp_2m(guided, io["noise"], steps=3, shift=3.0).clamp(-1, 1)
    assert torch.equal(out, ref)


def test_per_sample_sigma_matters(decoder, io):
    kw = dict(caption_embeds=io["y"], noise=io["noise"], seed=0, progress=False)
    a = decoder.decode(io["lq_latent"], sigma=[0.0, 0.0], **kw)
    b = decoder.decode(io["lq_latent"], sigma=[0.0, 0.7], **kw)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)  # sample 0 keeps sigma 0
    assert (a[1] - b[1]).abs().max() > 1e-2


def test_output_formats(decoder, io):
    kw = dict(sigma=0.0, caption_embeds=io["y"], noise=io["noise"], step_noises=[io[f"eps_{k}"] for k in (1, 2, 3)],
              progress=False)
    t = decoder.decode(io["lq_latent"], **kw)
    arr = decoder.decode(io["lq_latent"], output="numpy", **kw)
    assert arr.dtype == np.uint8 and arr.shape == (2, 64, 96, 3)
    expected = ((t + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # truncation, as the reference
    assert np.array_equal(arr, expected)
    pytest.importorskip("PIL")
    images = decoder.decode(io["lq_latent"], output="pil", **kw)
    assert len(images) == 2 and images[0].size == (96, 64)
    assert np.array_equal(np.asarray(images[1]), expected[1])


def test_raw_latent_format_with_latent_space(decoder, io):
    flux = latents.get_latent_space("flux")
    raw = flux.denormalize(io["lq_latent"])
    kw = dict(sigma=0.0, caption_embeds=io["y"], noise=io["noise"], seed=0, progress=False)
    a = decoder.decode(raw, latent_format="raw", latent_space="flux", **kw)
    b = decoder.decode(flux.normalize(raw), **kw)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="latent_space="):
        decoder.decode(raw, latent_format="raw", **kw)


# (id, call(decoder, latent, caption embeddings), error, message): each bad input named by its error. (sampler="euler"
# is tests/test_bad_input.py's API case "sampler".)
BAD_INPUTS = [
    ("4-channel latent", lambda d, lat, y: d.decode(lat[:, :4], caption_embeds=y), ValueError,
     "16-channel latents, got 4"),
    ("NaN latent", lambda d, lat, y: d.decode(lat * float("nan"), caption_embeds=y), ValueError, "NaN or Inf"),
    ("output size not a multiple of 16", lambda d, lat, y: d.decode(lat, caption_embeds=y, output_size=(100, 96)),
     ValueError, "multiple of 16"),
    ("sigma out of range", lambda d, lat, y: d.decode(lat, caption_embeds=y, sigma=1.5), ValueError,
     r"sigma must lie in \[0, 1\]"),
    ("a sigma too many", lambda d, lat, y: d.decode(lat, caption_embeds=y, sigma=[0.1, 0.2, 0.3]), ValueError,
     "one value per sample"),
    ("no caption embeddings", lambda d, lat, y: d.decode(lat), ValueError, "pid encode-caption"),
    ("noise of another shape", lambda d, lat, y: d.decode(lat, caption_embeds=y, noise=torch.zeros(2, 3, 8, 8)),
     ValueError, "noise must have shape"),
    ("numpy latent", lambda d, lat, y: d.decode(lat.numpy(), caption_embeds=y), TypeError, None),
    ("integer latent", lambda d, lat, y: d.decode(lat.long(), caption_embeds=y), ValueError, "floating-point"),
    ("latent on another device", lambda d, lat, y: d.decode(lat.to("meta"), caption_embeds=y), ValueError,
     "latent is on meta but the decoder is on cpu"),
    ("zero steps", lambda d, lat, y: d.decode(lat, caption_embeds=y, steps=0), ValueError, "steps must be >= 1"),
    ("caption embeddings of another width", lambda d, lat, y: d.decode(lat, caption_embeds=torch.zeros(2, 12, 31)),
     ValueError, "caption embeddings must be"),
    ("CUDA graph on the CPU", lambda d, lat, y: d.decode(lat, caption_embeds=y, cuda_graph=True), ValueError,
     "cuda_graph=True needs a decoder on a CUDA device"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_named(decoder, io, call, error, match):
    with pytest.raises(error, match=match):
        call(decoder, io["lq_latent"], io["y"])


def test_size_rules_and_warnings(decoder, io, caplog):
    kw = dict(caption_embeds=io["y"], seed=0, progress=False)
    assert decoder.decode(io["lq_latent"][:, :, :1, :2], **kw).shape[-2:] == (32, 64)  # natural: 32 px per cell
    with caplog.at_level(logging.WARNING, logger="pid.decoder"):
        out = decoder.decode(io["lq_latent"], output_size=(96, 96), **kw)
    assert out.shape[-2:] == (96, 96)
    assert any(r.name == "pid.decoder" and "nearest-resized" in r.getMessage() for r in caplog.records)


def test_progress_is_logged(decoder, io, caplog):
    with caplog.at_level(logging.DEBUG, logger="pid.decoder"):
        decoder.decode(io["lq_latent"], caption_embeds=io["y"], seed=0)
    assert "student step 4/4" in caplog.text and "decoded 2 image(s) 96x64 with the student sampler" in caplog.text


def test_one_call_decode(tiny_checkpoint, io):
    kw = dict(caption_embeds=io["y"], seed=3, progress=False)
    a = pid.decode(tiny_checkpoint.pth, io["lq_latent"], config=tiny_checkpoint.kwargs, **kw)
    b = pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs).decode(io["lq_latent"], **kw)
    assert torch.equal(a, b)


def test_callback_sees_every_step_and_can_stop_the_decode(decoder, io):
    """callback(step, steps, x) after each step with the sampler's state; raising from it stops the decode between
    steps (the exception reaches the caller), and the decoder decodes as before afterwards."""
    kw = dict(caption_embeds=io["y"], seed=5, progress=False)
    seen = []
    full = decoder.decode(io["lq_latent"], callback=lambda step, steps, x: seen.append((step, steps, x.clone())), **kw)
    assert [(s, n) for s, n, _ in seen] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert torch.equal(seen[-1][2].clamp(-1, 1), full)  # the last state is the image, before its clamp

    class Cancel(Exception):
        pass

    def cancel_after_two(step, steps, x):
        if step == 1:
            raise Cancel
        seen.append(step)
    seen.clear()
    with pytest.raises(Cancel):
        decoder.decode(io["lq_latent"], callback=cancel_after_two, **kw)
    assert seen == [0]
    assert torch.equal(decoder.decode(io["lq_latent"], **kw), full)


def test_callback_is_refused_with_parallel_decoding(tiny_checkpoint, io):
    """A callback that raised on one rank would leave the others waiting in a collective: refused before anything."""
    from pid.parallel import DataParallel

    dec = pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs, precision="float32")
    dec.parallel = DataParallel(rank=0, world_size=2)  # no process group needed: refused before any collective
    with pytest.raises(pid.PidError, match="callback= is not supported with parallel decoding"):
        dec.decode(io["lq_latent"], caption_embeds=io["y"], callback=lambda *a: None, progress=False)
