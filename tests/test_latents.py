"""pid.latents: per-backbone normalisation, noisy-latent frames, latent geometry.

Every formula is checked against an independent float64 evaluation written from the reference's definitions;
the constants below are typed in again rather than imported from the module under test."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from pid import latents as L
from pid.latents import (DINOv2Latent, Flux2Latent, LatentError, QwenImageLatent, SigLIPLatent, add_noise,
                         check_latent, euler_to_vp, flow_sigma_after_step, get_latent_space, rae_sigma,
                         rae_time_schedule)
from pid.latents import LATENT_CLASSES
from pid.variants import VARIANTS

# The reference's normalisation constants
SCALED = {"flux": (0.3611, 0.1159), "sd3": (1.5305, 0.0609), "sdxl": (0.13025, 0.0)}
QWEN_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
             -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
QWEN_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
            1.6382, 1.1253, 2.8251, 1.9160]


def close(a, b, tol=2e-6):
    a, b = a.double(), b.double()
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


def bn_stats(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(128, generator=g), torch.rand(128, generator=g) * 3 + 0.01


# ------------------------------------------------------------------------------ registry consistency
def test_names_and_facts_match_variants_registry():
    """Each released variant's network takes exactly its latent space's channels (two independent sources:
    the released networks' latent channels and the latent spaces' table)."""
    assert {v.latent.name for v in VARIANTS.values()} == set(L.LATENT_NAMES)
    for v in VARIANTS.values():
        assert v.latent.channels == v.config.lq_latent_channels, v.name
        assert get_latent_space(v).name == v.latent.name
        assert v.latent.noise_frame == ("vp" if v.latent.name == "sdxl" else "flow")


def test_every_variant_resolves_and_agrees_on_geometry():
    # The latent space's VAE factor is the network's latent down factor, so that a VAE latent of an image decodes to
    # that image's size times the super-resolution factor (PidConfig.output_size).
    for v in VARIANTS.values():
        space = get_latent_space(v)
        assert space.name == v.latent.name
        assert space.channels == v.config.lq_latent_channels
        assert space.vae_factor == v.config.latent_spatial_down_factor, v.name
        for H, W in [(1024, 768), (2048, 2048)]:
            h, w = space.latent_grid(H, W)
            if space.fixed_grid is None:
                assert v.output_size(h, w) == (H * v.sr_scale, W * v.sr_scale), v.name


def test_latent_grid_examples():
    assert get_latent_space("flux").latent_grid(1024, 768) == (128, 96)
    assert get_latent_space("flux2").latent_grid(1024, 768) == (64, 48)
    assert get_latent_space("dinov2").latent_grid(1024, 768) == (32, 32)
    assert get_latent_space("siglip").latent_grid(300, 200) == (16, 16)
    with pytest.raises(LatentError, match="multiple of 16"):
        get_latent_space("flux2").latent_grid(1000, 1024)


def test_get_latent_space_aliases_and_errors():
    assert get_latent_space("Z-Image").name == "flux"
    assert get_latent_space("flux2-klein-4b").name == "flux2"
    assert get_latent_space("qwenimage-2512").name == "qwenimage"
    assert get_latent_space(VARIANTS["sdxl-2kto4k"]).name == "sdxl"
    obj = SigLIPLatent()
    assert get_latent_space(obj) is obj
    with pytest.raises(LatentError) as e:
        get_latent_space("flx")
    for name in L.LATENT_NAMES:
        assert name in str(e.value)
    with pytest.raises(LatentError, match="takes no arguments"):
        get_latent_space("sdxl", bn_mean=1)
    m, v = bn_stats()
    assert get_latent_space("flux2", bn_mean=m, bn_var=v).has_stats


# ------------------------------------------------------------------------------ scaled VAEs
@pytest.mark.parametrize("name", sorted(SCALED))
def test_scaled_normalize_matches_float64_formula(name):
    s, b = SCALED[name]
    space = get_latent_space(name)
    raw = torch.randn(2, space.channels, 5, 7) * 3
    z = space.normalize(raw)
    assert z.dtype == torch.float32 and z.shape == raw.shape
    close(z, s * (raw.double() - b))
    close(space.denormalize(z), raw, 1e-6)
    zz = torch.randn(2, space.channels, 5, 7)
    close(space.denormalize(zz), zz.double() / s + b)


@pytest.mark.parametrize("name", sorted(SCALED))
def test_dtype_kept(name):
    space = get_latent_space(name)
    raw = torch.randn(1, space.channels, 4, 4)
    assert space.normalize(raw.bfloat16()).dtype == torch.bfloat16
    assert space.normalize(raw.half()).dtype == torch.float16
    z64 = space.normalize(raw.double())
    assert z64.dtype == torch.float64
    s, b = SCALED[name]
    close(z64, s * (raw.double() - b), 1e-14)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(SCALED) + ["qwenimage"]), st.floats(-50, 50), st.integers(1, 3))
def test_round_trip_property(name, offset, batch):
    space = get_latent_space(name)
    raw = torch.randn(batch, space.channels, 3, 2, dtype=torch.float64) + offset
    close(space.denormalize(space.normalize(raw)), raw, 1e-12)


# ------------------------------------------------------------------------------ Qwen-Image
def test_qwen_per_channel_formula_and_layouts():
    q = QwenImageLatent()
    raw = torch.randn(2, 16, 3, 5) * 2
    mean = torch.tensor(QWEN_MEAN, dtype=torch.float64).view(1, 16, 1, 1)
    std = torch.tensor(QWEN_STD, dtype=torch.float64).view(1, 16, 1, 1)
    z = q.normalize(raw)
    close(z, (raw.double() - mean) / std)
    z5 = q.normalize(raw.unsqueeze(2))  # video-VAE layout in, 4-D out
    assert z5.shape == (2, 16, 3, 5)
    assert torch.equal(z5, z)
    close(q.denormalize(z), raw, 1e-6)
    back5 = q.denormalize(z, video_layout=True)
    assert back5.shape == (2, 16, 1, 3, 5)
    assert torch.equal(q.denormalize(z.unsqueeze(2)), q.denormalize(z))
    with pytest.raises(LatentError, match="frames"):
        q.normalize(torch.randn(1, 16, 3, 4, 4))


# ------------------------------------------------------------------------------ FLUX.2
def test_flux2_pack_index_mapping_explicit():
    raw = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = Flux2Latent.pack(raw)
    assert p.shape == (2, 12, 2, 3)
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    for y in range(2):
                        for x in range(3):
                            assert p[b, c * 4 + 2 * i + j, y, x] == raw[b, c, 2 * y + i, 2 * x + j]
    # a few spelled-out elements
    assert p[0, 1, 0, 0] == raw[0, 0, 0, 1]
    assert p[0, 2, 0, 0] == raw[0, 0, 1, 0]
    assert p[1, 7, 1, 2] == raw[1, 1, 3, 5]


def test_flux2_unpack_is_pixel_shuffle_and_inverse_of_pack():
    raw = torch.randn(2, 32, 8, 10)
    p = Flux2Latent.pack(raw)
    assert torch.equal(p, F.pixel_unshuffle(raw, 2))
    assert torch.equal(Flux2Latent.unpack(p), F.pixel_shuffle(p, 2))
    assert torch.equal(Flux2Latent.unpack(p), raw)
    with pytest.raises(LatentError, match="even"):
        Flux2Latent.pack(torch.randn(1, 32, 5, 4))


def test_flux2_batch_norm_formula(caplog):
    m, v = bn_stats()
    f2 = Flux2Latent(m, v)
    raw32 = torch.randn(2, 32, 6, 8) * 2
    with caplog.at_level(logging.INFO, logger="pid.latents"):
        z = f2.normalize(raw32)
    assert "packing" in caplog.text
    assert z.shape == (2, 128, 3, 4)
    packed = F.pixel_unshuffle(raw32.double(), 2)
    ref = (packed - m.double().view(1, -1, 1, 1)) / torch.sqrt(v.double().view(1, -1, 1, 1) + 1e-4)
    close(z, ref)
    # already-packed raw: batch norm only
    assert torch.allclose(f2.normalize(Flux2Latent.pack(raw32)), z, atol=1e-6)
    back = f2.denormalize(z)
    assert back.shape == raw32.shape
    close(back, raw32, 2e-6)
    assert f2.denormalize(z, unpack=False).shape == (2, 128, 3, 4)
    assert f2.normalize(raw32.bfloat16()).dtype == torch.bfloat16
    # torch's own eval-mode batch norm agrees
    bn = torch.nn.BatchNorm2d(128, eps=1e-4, affine=False).eval()
    bn.running_mean.copy_(m)
    bn.running_var.copy_(v)
    close(f2.normalize(raw32), bn(F.pixel_unshuffle(raw32, 2)), 1e-5)


def test_flux2_errors():
    with pytest.raises(LatentError, match="from_vae_file"):
        Flux2Latent().normalize(torch.randn(1, 32, 4, 4))
    with pytest.raises(LatentError, match="128 values"):
        Flux2Latent(torch.zeros(32), torch.ones(32))
    with pytest.raises(LatentError, match="both"):
        Flux2Latent(torch.zeros(128))
    with pytest.raises(LatentError, match="32-channel"):
        Flux2Latent(*bn_stats()).normalize(torch.randn(1, 16, 4, 4))


def _fake_flux2_vae(prefix=""):
    m, v = bn_stats(3)
    return {f"{prefix}bn.running_mean": m, f"{prefix}bn.running_var": v,
            f"{prefix}bn.num_batches_tracked": torch.tensor(7),
            f"{prefix}encoder.conv_in.weight": torch.randn(4, 3, 3, 3),
            f"{prefix}decoder.norm_out.weight": torch.randn(4)}, m, v


@pytest.mark.parametrize("prefix", ["", "vae.", "model.ae."])
def test_flux2_stats_from_safetensors(tmp_path, prefix):
    sd, m, v = _fake_flux2_vae(prefix)
    path = tmp_path / "flux2_ae.safetensors"
    save_file(sd, str(path))
    f2 = Flux2Latent.from_vae_file(path)
    assert torch.equal(f2.bn_mean, m) and torch.equal(f2.bn_var, v)
    assert get_latent_space("flux2", vae_file=path).has_stats
    assert torch.equal(Flux2Latent.from_state_dict(sd).bn_var, v)


def test_flux2_stats_from_pth(tmp_path):
    sd, m, v = _fake_flux2_vae("vae.")
    path = tmp_path / "ae.pth"
    torch.save(sd, path)
    assert torch.equal(Flux2Latent.from_vae_file(path).bn_mean, m)
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": _fake_flux2_vae()[0]}, nested)
    assert Flux2Latent.from_vae_file(nested).has_stats


def test_flux2_missing_and_ambiguous_keys(tmp_path):
    path = tmp_path / "flux1_ae.safetensors"
    save_file({"encoder.norm_out.weight": torch.ones(4), "enc.bn.running_means": torch.zeros(128),
               "decoder.conv_in.weight": torch.ones(1)}, str(path))
    with pytest.raises(LatentError) as e:
        Flux2Latent.from_vae_file(path)
    msg = str(e.value)
    assert "bn.running_mean" in msg and "similar keys" in msg and "enc.bn.running_means" in msg
    assert "Flux2Latent(bn_mean, bn_var)" in msg
    with pytest.raises(LatentError, match="no FLUX.2 batch-norm statistics"):  # mean without var
        Flux2Latent.from_state_dict({"bn.running_mean": torch.zeros(128)})
    with pytest.raises(LatentError, match="no 'x.bn.running_mean'"):
        Flux2Latent.from_state_dict(_fake_flux2_vae("vae.")[0], prefix="x")
    both = {**_fake_flux2_vae("a.")[0], **_fake_flux2_vae("b.")[0]}
    amb = tmp_path / "two.safetensors"
    save_file(both, str(amb))
    with pytest.raises(LatentError, match="prefix="):
        Flux2Latent.from_vae_file(amb)
    assert torch.equal(Flux2Latent.from_vae_file(amb, prefix="b").bn_mean, both["b.bn.running_mean"])
    with pytest.raises(LatentError, match="does not exist"):
        Flux2Latent.from_vae_file(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    with pytest.raises(LatentError, match="safetensors"):
        Flux2Latent.from_vae_file(junk)


# ------------------------------------------------------------------------------ DINOv2 RAE
def _write_stat_pt(path, seed=5):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(768, 32, 32, generator=g)
    var = torch.rand(768, 32, 32, generator=g) * 2 + 0.01
    torch.save({"mean": mean, "var": var}, path)  # the official stat.pt layout
    return mean, var


def test_dinov2_stats_file_round_trip(tmp_path):
    path = tmp_path / "stat.pt"
    mean, var = _write_stat_pt(path)
    d = DINOv2Latent.from_stats_file(path)
    raw = torch.randn(2, 768, 32, 32) * 3
    z = d.normalize(raw)
    close(z, (raw.double() - mean.double()) / torch.sqrt(var.double() + 1e-5))
    close(d.denormalize(z), raw, 2e-6)
    tokens = raw.flatten(2).transpose(1, 2)  # [B, 1024, 768] as the encoder emits
    assert torch.equal(d.normalize(tokens), z)
    assert get_latent_space("dinov2", stats_file=path).has_stats
    d4 = DINOv2Latent(mean[None], var[None])  # a saved [1, 768, 32, 32] is tolerated
    assert torch.equal(d4.normalize(raw), z)


def test_dinov2_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"latent_mean": torch.zeros(768, 32, 32)}, bad)
    with pytest.raises(LatentError, match="'mean' and 'var'"):
        DINOv2Latent.from_stats_file(bad)
    with pytest.raises(LatentError, match=r"\[768, 32, 32\]"):
        DINOv2Latent(torch.zeros(768), torch.ones(768))
    with pytest.raises(LatentError, match="from_stats_file"):
        DINOv2Latent().normalize(torch.randn(1, 768, 32, 32))
    d = DINOv2Latent(torch.zeros(768, 32, 32), torch.ones(768, 32, 32))
    with pytest.raises(LatentError, match="32×32"):
        d.normalize(torch.randn(1, 768, 16, 16))


# ------------------------------------------------------------------------------ SigLIP Scale-RAE
def test_siglip_layer_norm_matches_float64_reference():
    s = SigLIPLatent()
    raw = torch.randn(2, 1152, 16, 16) * 5 + 2
    z = s.normalize(raw)
    assert z.dtype == torch.float32 and z.shape == raw.shape
    x = raw.double().permute(0, 2, 3, 1)
    ref = F.layer_norm(x, (1152,), eps=1e-6).permute(0, 3, 1, 2)
    close(z, ref, 1e-5)
    # written out: biased variance over the 1152 channels of each token
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    close(z, ((x - mu) / torch.sqrt(var + 1e-6)).permute(0, 3, 1, 2), 1e-5)
    tokens = raw.flatten(2).transpose(1, 2)  # [B, 256, 1152]
    assert torch.equal(s.normalize(tokens), z)
    assert s.normalize(raw.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(LatentError, match="cannot be denormalised"):
        s.denormalize(z)


# ------------------------------------------------------------------------------ check_latent
# Channels handed to PiD and the RAEs' fixed grids, typed in from the reference's latent table.
SPEC_CHANNELS = {"flux": 16, "sd3": 16, "sdxl": 4, "qwenimage": 16, "flux2": 128, "dinov2": 768, "siglip": 1152}
SPEC_FIXED_GRID = {"dinov2": (32, 32), "siglip": (16, 16)}


def test_check_latent_accepts_valid_latents():
    assert set(SPEC_CHANNELS) == set(L.LATENT_NAMES)
    for name, channels in SPEC_CHANNELS.items():
        h, w = SPEC_FIXED_GRID.get(name, (12, 20))
        z = torch.randn(1, channels, h, w, dtype=torch.bfloat16)
        assert check_latent(z, name) is z
        assert get_latent_space(name).fixed_grid == SPEC_FIXED_GRID.get(name)


@pytest.mark.parametrize("z,space,needle", [
    (torch.randn(1, 32, 8, 8), "flux2", "a raw 32-channel FLUX.2 latent: pack it with Flux2Latent.pack/normalize"),
    (torch.randn(1, 16, 8, 8), "sdxl", "16 channels given to an SDXL decoder"),
    (torch.randn(1, 4, 8, 8), "flux", "looks like an SDXL latent"),
    (torch.randn(1, 64, 8, 8), "flux", "FluxPipeline._unpack_latents"),
    (torch.randn(1, 16, 8, 8), "flux2", "FLUX.1-family"),
    (torch.randn(1, 64, 64, 16), "flux", "permute(0, 3, 1, 2)"),
    (torch.randn(16, 8, 8), "sd3", "[None]"),
    (torch.randn(1, 16, 1, 8, 8), "qwenimage", "x[:, :, 0]"),
    (torch.randn(1, 4096, 128), "flux2", "_unpack_latents_with_ids"),
    (torch.randn(1, 1024, 768), "dinov2", "tokens_to_grid"),
    (torch.randn(1, 768, 64, 64), "dinov2", "always 32×32"),
    (torch.randn(1, 1152, 32, 32), "siglip", "always 16×16"),
    (torch.zeros(1, 4, 8, 8, dtype=torch.int64), "sdxl", "floating point"),
    (torch.full((1, 4, 2, 2), float("nan")), "sdxl", "16 NaN"),
    (torch.tensor([[[[1.0, float("inf")]]] * 4]), "sdxl", "4 Inf"),
])
def test_check_latent_errors_name_the_cause(z, space, needle):
    with pytest.raises(LatentError) as e:
        check_latent(z, space)
    assert needle in str(e.value)
    if z.ndim == 4 and z.is_floating_point() and z.shape[1] != SPEC_CHANNELS[space]:
        assert str(SPEC_CHANNELS[space]) in str(e.value)


def test_normalize_wrong_channels_says_what_to_do():
    with pytest.raises(LatentError, match="16 channels given to an SDXL decoder"):
        get_latent_space("sdxl").normalize(torch.randn(1, 16, 4, 4))


# ------------------------------------------------------------------------------ flow sigma capture
def test_flow_sigma_after_step():
    # a shifted diffusers FlowMatch schedule: steps + 1 sigmas ending in 0
    steps, shift = 28, 3.0
    t = torch.linspace(1.0, 1.0 / steps, steps)
    sig = shift * t / (1 + (shift - 1) * t)
    sigmas = torch.cat([sig, torch.zeros(1)])
    assert flow_sigma_after_step(sigmas, 0) == pytest.approx(1.0)
    assert flow_sigma_after_step(sigmas, 24) == pytest.approx(float(sigmas[24]))
    assert flow_sigma_after_step(sigmas, steps) == 0.0  # final clean latent, = sigmas[-1]
    assert flow_sigma_after_step(sigmas.tolist(), steps) == float(sigmas[-1])
    for bad in (-1, steps + 1):
        with pytest.raises(LatentError, match="outside"):
            flow_sigma_after_step(sigmas, bad)
    with pytest.raises(LatentError, match="empty"):
        flow_sigma_after_step([], 0)


# ------------------------------------------------------------------------------ SDXL Euler -> VP
def test_euler_to_vp_identity_at_zero():
    x = torch.randn(2, 4, 8, 8)
    out, s = euler_to_vp(x, 0.0)
    assert torch.equal(out, x) and s == 0.0


def test_euler_to_vp_formula_and_vp_form():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 16, 16, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 16, 16, generator=g, dtype=torch.float64)
    sig = torch.tensor([0.0, 1.3, 14.6], dtype=torch.float64)
    x_eu = z + sig.view(-1, 1, 1, 1) * eps
    x_vp, s_vp = euler_to_vp(x_eu.float(), sig)
    assert isinstance(s_vp, torch.Tensor) and s_vp.dtype == torch.float32 and s_vp.shape == (3,)
    ref_s = sig / torch.sqrt(sig ** 2 + 1)
    close(s_vp, ref_s, 1e-7)
    close(x_vp, x_eu / torch.sqrt(sig ** 2 + 1).view(-1, 1, 1, 1), 1e-6)
    # the VP point is sqrt(1 − σ_vp²)·z + σ_vp·ε with the same noise realisation (unit-variance form)
    a = torch.sqrt(1 - ref_s ** 2).view(-1, 1, 1, 1)
    close(x_vp, a * z + ref_s.view(-1, 1, 1, 1) * eps, 1e-5)
    assert torch.allclose(a.flatten() ** 2 + ref_s ** 2, torch.ones(3, dtype=torch.float64))
    # scalar σ gives a float; a list gives a tensor; bf16 stays bf16
    _, s1 = euler_to_vp(x_eu.float(), 1.3)
    assert isinstance(s1, float) and s1 == pytest.approx(1.3 / math.sqrt(1.3 ** 2 + 1))
    out, s2 = euler_to_vp(x_eu.bfloat16(), [0.0, 1.3, 14.6])
    assert out.dtype == torch.bfloat16 and s2.shape == (3,)
    with pytest.raises(LatentError, match="≥ 0"):
        euler_to_vp(x_eu, -0.1)
    with pytest.raises(LatentError, match="batch of 3"):
        euler_to_vp(x_eu, [1.0, 2.0])


# ------------------------------------------------------------------------------ RAE ODE time
def test_rae_sigma_matches_spec_formula():
    steps, shape = 50, (768, 32, 32)
    s = math.sqrt(768 * 32 * 32 / 4096)
    assert s == pytest.approx(13.856, abs=1e-3)
    for k in range(steps + 1):
        u = 1 - k * (1 - 1 / 1000) / steps
        ref = s * u / (1 + (s - 1) * u)
        # float32 like the reference's torch.linspace; 1 − 0.999 loses ~5 digits at the last step
        assert rae_sigma(k, steps, shape) == pytest.approx(ref, rel=5e-5, abs=1e-7)
        u32 = 1.0 - torch.linspace(0.0, 1.0 - 1.0 / 1000, steps + 1)[k]
        assert rae_sigma(k, steps, shape) == float(s * u32 / (1 + (s - 1) * u32))
    assert rae_sigma(0, steps) == pytest.approx(1.0)
    sched = rae_time_schedule(steps, (2,) + shape)  # a batch dimension is ignored
    assert sched.shape == (steps + 1,) and bool((sched[1:] < sched[:-1]).all())
    assert float(sched[-1]) == pytest.approx(s * 1e-3 / (1 + (s - 1) * 1e-3), rel=5e-5)  # ≈0.0137, not 0
    with pytest.raises(LatentError, match="outside"):
        rae_sigma(steps + 1, steps)
    with pytest.raises(LatentError, match="shape"):
        rae_time_schedule(10, (32, 32))


# ------------------------------------------------------------------------------ add_noise
def test_add_noise_sigma_zero_draws_nothing():
    z = torch.randn(2, 16, 4, 4)
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    assert add_noise(z, 0.0, g) is z
    assert add_noise(z, [0.0, -0.2], g) is z
    assert add_noise(z, torch.zeros(2), g, frame="vp") is z
    assert torch.equal(g.get_state(), state)


def test_add_noise_flow_per_sample_against_float64():
    z = torch.randn(3, 16, 5, 6)
    eps = torch.randn(3, 16, 5, 6)
    sig = [0.0, 0.4, 0.8]
    out = add_noise(z, sig, noise=eps)
    s = torch.tensor(sig, dtype=torch.float64).view(-1, 1, 1, 1)
    close(out, (1 - s) * z.double() + s * eps.double(), 1e-6)
    assert torch.equal(out[0], z[0])  # σ = 0 sample untouched
    assert torch.equal(add_noise(z, torch.tensor(sig, dtype=torch.float64), noise=eps), out)
    close(add_noise(z, torch.tensor(sig), noise=eps), out, 1e-6)  # float32 σ: same up to σ's rounding


def test_add_noise_vp_frame():
    z = torch.randn(2, 4, 5, 6)
    eps = torch.randn(2, 4, 5, 6)
    sig = torch.tensor([0.3, 1.0])
    out = add_noise(z, sig, frame="vp", noise=eps)
    s = sig.double().view(-1, 1, 1, 1)
    close(out, torch.sqrt(torch.clamp(1 - s ** 2, min=0)) * z.double() + s * eps.double(), 1e-6)
    close(out[1], eps[1], 0)  # σ = 1: pure noise


def test_add_noise_bit_matches_reference_scalar_expression():
    z = torch.randn(1, 16, 8, 8)
    eps = torch.randn(1, 16, 8, 8)
    for sigma in (0.1, 0.4, 0.73):
        assert torch.equal(add_noise(z, sigma, noise=eps), (1.0 - sigma) * z + sigma * eps)
        mean_coef = float(max(0.0, 1.0 - sigma * sigma) ** 0.5)
        assert torch.equal(add_noise(z, sigma, frame="vp", noise=eps), mean_coef * z + sigma * eps)


def test_add_noise_generator_draw_and_dtype():
    z = torch.randn(2, 16, 4, 4, dtype=torch.bfloat16)
    out = add_noise(z, 0.5, torch.Generator().manual_seed(7))
    assert out.dtype == torch.bfloat16
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert torch.equal(out, (0.5 * z.float() + 0.5 * eps).to(torch.bfloat16))  # float32 math, then cast
    again = add_noise(z, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)


def test_add_noise_errors():
    z = torch.randn(2, 4, 4, 4)
    with pytest.raises(LatentError, match="euler_to_vp"):
        add_noise(z, 3.0)
    with pytest.raises(LatentError, match="'flow' or 'vp'"):
        add_noise(z, 0.5, frame="ve")
    with pytest.raises(LatentError, match="must match"):
        add_noise(z, 0.5, noise=torch.randn(1, 4, 4, 4))
    with pytest.raises(LatentError, match="batch of 2"):
        add_noise(z, [0.1, 0.2, 0.3])
    with pytest.raises(LatentError, match="NaN"):
        add_noise(z, float("nan"))
    with pytest.raises(LatentError, match="floating-point"):
        add_noise(z.long(), 0.5)


def test_known_layouts_name_the_registrys_decoders():
    """The messages' list of latent spaces that decode a channel count is the registry's (kept beside the base class,
    which the registry imports)."""
    from pid.latents.base import KNOWN_LAYOUTS

    for channels, (_, decoders) in KNOWN_LAYOUTS.items():
        assert list(decoders) == [n for n, cls in LATENT_CLASSES.items() if cls.channels == channels], channels
    assert {cls.channels for cls in LATENT_CLASSES.values()} <= set(KNOWN_LAYOUTS)
