"""Precision regimes: float32 (golden parity), reference (fp32 weights + bf16 autocast), fast (bf16 weights)."""

import math

import pytest
import torch

import pid
from pid import golden

from conftest import SHARED

GOLDEN = golden.find_golden_dir(SHARED / "golden")
needs_golden = pytest.mark.skipif(GOLDEN is None, reason="no golden folder")

PSNR_BUDGET_DB = 45.0  # fast path vs the reference precision path, identical noise (speed issue)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def _decode(name, precision, device="cpu", **kw):
    case = golden.GoldenCase(name, GOLDEN)
    # Released weights are bf16 values (model_ema_bf16.pth), so both regimes hold identical weights; the
    # golden weights are arbitrary float32, so round them as the release did.
    weights = {k: v.bfloat16().float() for k, v in case.weights().items()}
    dec = pid.load(weights, config=case.meta["net_kwargs"], precision=precision, device=device)
    io = case.io
    B, _, h, w = io["lq_latent"].shape
    gen = torch.Generator().manual_seed(0)
    H, W = h * dec.config.pixels_per_latent, w * dec.config.pixels_per_latent
    noise = torch.randn(B, 3, H, W, generator=gen)
    eps = [torch.randn(B, 3, H, W, generator=gen) for _ in range(3)]
    return dec, dec.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"], noise=noise,
                           step_noises=eps, progress=False, **kw)


@needs_golden
@pytest.mark.parametrize("name", ["v1_net", "v15_net", "v15_flux2_net"])
def test_fast_within_psnr_budget_of_reference(name):
    ref_dec, ref = _decode(name, "reference")
    fast_dec, fast = _decode(name, "fast")
    assert all(p.dtype == torch.bfloat16 for p in fast_dec.net.parameters())  # no float32 copy kept
    assert all(p.dtype == torch.float32 for p in ref_dec.net.parameters())
    assert psnr(fast, ref) >= PSNR_BUDGET_DB


@needs_golden
def test_reference_regime_is_bf16_autocast_within_the_golden_budget():
    """The reference regime is the reference implementation's bfloat16 autocast: on the golden student case it
    departs from the float32 decode (autocast rounds the matrix products) by no more than the case's bfloat16
    tolerance, 3 × the bf16-autocast gap measured in the reference implementation itself."""
    case = golden.GoldenCase("v15_student", GOLDEN)
    io, meta = case.io, case.meta
    weights = golden.GoldenCase(meta["weights_file"].split(".")[0], GOLDEN).weights()  # float32, as the golden run
    config = golden.GoldenCase("v15_net", GOLDEN).meta["net_kwargs"]
    eps = [io[f"eps_{k}"] for k in range(1, len(meta["t_list_used"]) - 1)]
    out = {}
    for precision in ("float32", "reference"):
        dec = pid.load(weights, config=config, precision=precision)
        out[precision] = dec.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"],
                                    noise=io["noise"], step_noises=eps, progress=False)
    tol = meta["tolerance"]["bfloat16"]
    e = golden.errors(out["reference"], out["float32"], meta["output_max_abs"])
    assert e["max_abs_rel"] <= tol["max_abs_rel"] and e["mean_abs_rel"] <= tol["mean_abs_rel"], (e, tol)
    assert e["mean_abs_rel"] > meta["tolerance"]["float32"]["mean_abs_rel"], e  # and autocast did round


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_arguments(tiny_checkpoint, monkeypatch, native_bf16):
    import pid.plan

    monkeypatch.setattr(pid.plan, "native_bf16_cpu", lambda: native_bf16)
    kw = dict(config=tiny_checkpoint.kwargs)
    path = tiny_checkpoint.pth
    default = pid.load(path, **kw)  # the CPU default: fast where bfloat16 is native, else float32
    assert (default.precision, default.dtype) == (("fast", torch.bfloat16) if native_bf16 else ("float32", torch.float32))
    assert pid.load(path, precision="float32", **kw).precision == "float32"
    assert pid.load(path, precision="reference", **kw).precision == "reference"
    assert pid.load(path, dtype=torch.bfloat16, **kw).precision == "fast"
    with pytest.raises(ValueError, match="contradict"):
        pid.load(path, dtype=torch.bfloat16, precision="reference", **kw)
    # an unknown precision: tests/test_bad_input.py's API case "precision"
