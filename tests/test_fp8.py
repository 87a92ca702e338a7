"""The fp8 regime on the CPU: its quantisation against float64 math, the emulated fp8 Linear against the float64
product within the e4m3 error bound derived below, which Linears it quantises, its memory estimate, its refusal where
it cannot run well, and whole decodes in fp8 (emulated) against the reference regime. The fp8 GEMM itself
(torch._scaled_mm) runs only on a GPU with fp8 tensor cores (benchmarks/device/run.sh speed); the emulation computes
the same numbers up to the order of float32 summation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import pid
from pid import golden
from pid.archs import ARCHS, TINY, random_net
from pid.compare import psnr
from pid.errors import PidError
from pid.memory import estimate_memory, parameter_bytes
from pid.nn import PidNet
from pid.nn.fp8 import PIT_LINEARS, Fp8Linear, fp8_linear_names, is_quantized, quantize_linears
from pid.ops import _fp8

from conftest import SHARED

GOLDEN = golden.find_golden_dir(SHARED / "golden")
needs_golden = pytest.mark.skipif(GOLDEN is None, reason="no golden folder")


# ---- float64 e4m3, independent of torch's float8 cast -----------------------------------------------------------
def e4m3_values() -> np.ndarray:
    """The 126 non-negative finite float8_e4m3fn values (bias 7; exponent 0 subnormal; 0x7F is NaN), ascending,
    indexed by their code (so the code's parity is the mantissa's last bit)."""
    values = []
    for code in range(0x7F):
        e, m = code >> 3, code & 7
        values.append(m / 8 * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    return np.array(values)


E4M3 = e4m3_values()


def e4m3_round(v: np.ndarray) -> np.ndarray:
    """Round float64 values to e4m3: saturate at ±448, then nearest, ties to the even code."""
    a = np.minimum(np.abs(v), 448.0)
    hi = np.clip(np.searchsorted(E4M3, a), 0, len(E4M3) - 1)  # first value >= a
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = a - E4M3[lo], E4M3[hi] - a
    pick = np.where(d_lo < d_hi, lo, np.where(d_hi < d_lo, hi, np.where(lo % 2 == 0, lo, hi)))
    return np.sign(v) * E4M3[pick]


def quantize_rows_float64(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The rule of pid.ops._fp8 in float64 / numpy: scale = amax / 448 rounded to float32 (1 for a zero row), the
    float32 quotient x / scale (float64 division then float32 rounding: exactly IEEE float32 division), e4m3."""
    x64 = x.double().numpy()
    amax = np.abs(x64).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, (amax.astype(np.float32) / np.float64(448)).astype(np.float32), np.float32(1))
    quotient = (x.float().numpy().astype(np.float64) / scale.astype(np.float64)).astype(np.float32)
    return e4m3_round(quotient.astype(np.float64)), scale


def test_e4m3_table_is_the_format():
    assert E4M3[0] == 0 and E4M3[1] == 2.0**-9 and E4M3[7] == 7 * 2.0**-9 and E4M3[8] == 2.0**-6
    assert E4M3[-1] == 448.0 and len(E4M3) == 127 and np.all(np.diff(E4M3) > 0)


def test_quantize_rows_against_float64():
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(64, generator=g) * 10.0 ** torch.randint(-6, 6, (1,), generator=g).item() for _ in range(40)]
    rows.append(torch.zeros(64))  # a zero row: scale 1, all zeros
    rows.append(torch.tensor([448.0, 1.0625, 1.1875, -1.0625, 3 * 2.0**-10, 2.0**-10, 0.0, -0.0] * 8))  # ties
    rows.append(torch.tensor([1e-30] * 63 + [3e-30]))  # tiny but not zero
    x = torch.stack(rows)
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        q, scale = _fp8.quantize_rows(xd)
        want_q, want_scale = quantize_rows_float64(xd)
        assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (len(rows), 1)
        np.testing.assert_array_equal(scale.numpy(), want_scale)
        np.testing.assert_array_equal(q.double().numpy(), want_q)
    # The ties row has amax 448: scale 1, so its entries are rounded as they are: to the even code (1.0625 between
    # 1 and 1.125, 1.1875 between 1.125 and 1.25; subnormals 3·2^-10 between 2^-9 and 2^-8, 2^-10 between 0 and 2^-9).
    assert q[-2, :4].tolist() == [448.0, 1.0, 1.25, -1.0] and q[-2, 4:6].tolist() == [2.0**-8, 0.0]
    assert torch.equal(q[-3].float(), torch.zeros(64)) and scale[-3].item() == 1.0


def test_quantize_rows_saturates_instead_of_overflowing():
    """amax / (amax / 448) can round above 448 in float32; such a quotient is saturated, never NaN."""
    amaxes = torch.linspace(1, 2, 20001)
    scale = amaxes / 448
    over = amaxes[amaxes / scale > 448]
    assert len(over) > 0  # such values exist
    x = torch.stack([over, -over / 3], dim=1)
    q, _ = _fp8.quantize_rows(x)
    assert torch.equal(q[:, 0].float(), torch.full((len(over),), 448.0))
    assert not torch.isnan(q.float()).any()


def test_quantize_weight_is_per_output_channel():
    w = torch.randn(24, 40) * torch.logspace(-3, 3, 24)[:, None]
    q, scale = _fp8.quantize_weight(w)
    assert q.shape == (24, 40) and scale.shape == (24,)
    torch.testing.assert_close(scale, w.abs().amax(dim=1) / 448, rtol=0, atol=0)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((24,), 448.0))  # every channel uses the full range


# ---- the emulated fp8 Linear against float64 ---------------------------------------------------------------------
U_E4M3 = 2.0**-4  # unit roundoff of e4m3 (3 stored mantissa bits): |e4m3(v) - v| <= U |v| for normal v
SUB_E4M3 = 2.0**-10  # half the subnormal spacing 2^-9: the absolute error below the normal range (|v| < 2^-6)
U32 = 2.0**-24


def fp8_linear_error_bound(x: torch.Tensor, w: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor):
    """Bound on |y - x Wᵀ| (float64, elementwise) for the emulated fp8 product y with float32 output, where
    x = s_x (q_x + δ_x) per row, W = s_w (q_w + δ_w) per channel, |δ| <= U|v/s| + SUB (the e4m3 rounding of v/s; the
    float32 quotient v/s adds a relative 2^-24, folded into U below as U + 2^-24):
      |x_k w_k - s_x q_x s_w q_w| <= |x||w|(2u + u²) + (1 + u)(|x| a_w + a_x |w|) + a_x a_w      (a = s · SUB)
    then the float32 sum of K exact products (γ_K Σ |s_x q_x s_w q_w|, γ_K = K u32 / (1 - K u32)), the two scale
    products and the bias sum (3 more float32 roundings: 4 u32 |y|, with |y| <= the summed magnitudes)."""
    u = U_E4M3 + U32
    ax, aw = x_scale.double() * SUB_E4M3, (w_scale.double() * SUB_E4M3)[None, :]
    X, W = x.double().abs(), w.double().abs()
    K = x.shape[1]
    quant = (2 * u + u * u) * (X @ W.t()) + (1 + u) * (X.sum(1, keepdim=True) * aw + ax * W.sum(1)[None, :]) \
        + K * ax * aw
    mags = (1 + u) ** 2 * (X @ W.t()) + quant  # >= Σ |s_x q_x s_w q_w|
    gamma = K * U32 / (1 - K * U32)
    return quant + gamma * mags + 4 * U32 * (mags + 1)  # + 1: the bias's magnitude (|b| <= 1 below)


@pytest.mark.parametrize("K,N,dtype", [(64, 48, torch.float32), (1536, 40, torch.bfloat16), (72, 8, torch.float32)])
def test_emulated_fp8_linear_within_the_e4m3_bound(K, N, dtype):
    g = torch.Generator().manual_seed(K + N)
    M = 33
    x = (torch.randn(M, K, generator=g) * torch.logspace(-4, 2, M)[:, None]).to(dtype)
    x[3] = 0  # a zero row
    w = torch.randn(N, K, generator=g) * torch.logspace(-2, 1, N)[:, None]
    b = torch.rand(N, generator=g) * 2 - 1
    wq, ws = _fp8.quantize_weight(w)
    _, xs = _fp8.quantize_rows(x)
    y = _fp8.linear(x, wq, ws, b, torch.float32, emulate=True)
    exact = x.double() @ w.double().t() + b.double()
    err = (y.double() - exact).abs()
    bound = fp8_linear_error_bound(x, w, xs, ws)
    assert (err <= bound).all(), (err / bound).max().item()
    # No blanket bound: the worst element reaches a few % of it (the bound adds K roundings' worst cases, which
    # random signs cancel to about √K of them).
    assert (err / bound).max().item() > 0.02
    assert torch.equal(y[3], b.float())  # a zero row gives the bias exactly
    # The same through the module, on [..., K] inputs, in the autocast dtype under autocast.
    linear = nn.Linear(K, N)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    fp8 = Fp8Linear.from_linear(linear)
    assert fp8.weight.dtype == torch.float8_e4m3fn and torch.equal(fp8.weight, wq) and torch.equal(fp8.weight_scale, ws)
    assert torch.equal(fp8(x.float().view(3, 11, K)), _fp8.linear(x.float(), wq, ws, fp8.bias, torch.float32)
                       .view(3, 11, N))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fp8(x).dtype == torch.bfloat16


# ---- the regime ------------------------------------------------------------------------------------------------
def test_quantize_linears_takes_the_mmdit_ones():
    net = random_net(TINY).bfloat16()
    names = fp8_linear_names(net)
    assert len(names) == 10 * TINY.patch_depth
    assert "patch_blocks.0.mlp_x.w2" in names and "patch_blocks.3.attn.qkv_y" in names
    quantize_linears(net)
    assert is_quantized(net) and not is_quantized(net, PIT_LINEARS)
    linears = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    assert "pixel_blocks.0.mlp.fc1" in linears and "final_layer.linear" in linears  # kept in bf16
    assert "patch_blocks.0.adaLN_modulation_img.0" in linears and "s_embedder.proj" in linears
    assert "pixel_blocks.1.adaLN_modulation.0" in linears and "pixel_blocks.0.attn.qkv" in linears
    assert not linears & set(names)
    again = quantize_linears(net)  # idempotent
    assert again is net and is_quantized(net)
    layer = net.get_submodule(names[0])
    net.float()  # casts the rest of the network, never the fp8 layers' operands and scales
    assert (layer.weight.dtype, layer.weight_scale.dtype) == (torch.float8_e4m3fn, torch.float32)
    assert net.get_submodule("final_layer.linear").weight.dtype == torch.float32
    net.bfloat16()
    quantize_linears(net, PIT_LINEARS)  # for measurements: the PiT blocks' too
    assert is_quantized(net, PIT_LINEARS) and len(fp8_linear_names(net, PIT_LINEARS)) == 5 * TINY.pixel_depth


@pytest.mark.parametrize("arch", ["tiny", "full"])
def test_estimate_counts_fp8_weights(arch):
    cfg = ARCHS[arch]
    with torch.device("meta"):  # allocated nowhere: the released network's 1.4 B parameters count as well
        net = PidNet(cfg).bfloat16()
        fast = parameter_bytes(net)
        quantize_linears(net)
    assert estimate_memory(cfg, 1024, 1024, precision="fp8").weights == parameter_bytes(net)
    assert estimate_memory(cfg, 1024, 1024, precision="fast").weights == fast
    if arch == "full":
        # 2.80 GB → 2.01 GB: 0.79 B parameters in fp8; the MMDiT blocks' timestep-only adaLN Linears (0.40 B), the
        # PiT blocks and the latent CNN stay bf16.
        assert 0.70 * fast < parameter_bytes(net) < 0.73 * fast


def test_fp8_is_refused_where_it_cannot_run_well():
    sd = random_net(TINY).state_dict()
    with pytest.raises(PidError, match=r"^precision='fp8' needs fp8 tensor cores \(a CUDA GPU of compute capability "
                                       r"8\.9\+: Ada, Hopper, Blackwell\), not cpu: use precision='fast', or "
                                       r"fp8_emulation=True"):
        pid.load(sd, config=TINY, precision="fp8")
    with pytest.raises(PidError, match="contradict"):
        pid.load(sd, config=TINY, precision="fp8", dtype=torch.float32)
    decoder = pid.load(sd, config=TINY, precision="fp8", fp8_emulation=True)
    assert decoder.precision == "fp8" and is_quantized(decoder.net) and decoder.dtype == torch.bfloat16
    assert decoder.plan.fused_norm and decoder.plan.autocast_dtype == torch.bfloat16


def test_tiny_network_fp8_against_reference():
    """The tiny test network (random weights, torch's initialisation) decoded in fp8 (emulated) and in the
    reference regime: 66.6 dB PSNR at 128 x 128 on the dev machine (batch 2 at 128 x 192: 66.5, fast 67.8 dB;
    benchmarks/fp8_quality.py); held to 62 dB."""
    sd = random_net(TINY).state_dict()
    g = torch.Generator().manual_seed(1)
    latent, y = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 12, 32, generator=g)
    out = {p: pid.load(sd, config=TINY, precision=p, fp8_emulation=True).decode(
        latent, sigma=0.3, caption_embeds=y, seed=3, progress=False) for p in ("reference", "fp8")}
    db = psnr(out["fp8"], out["reference"])
    print(f"tiny network, fp8 (emulated) vs reference: {db:.2f} dB")
    assert 62.0 <= db < 90.0  # close, and not the reference itself


@needs_golden
@pytest.mark.parametrize("name", ["v1_net", "v15_flux2_net"])
def test_golden_network_fp8_against_reference(name):
    """The golden networks (random float32 weights rounded to bf16, as released checkpoints are; hidden 64) in fp8
    (emulated) against the reference regime, identical noise: 43.7 / 42.5 / 45.1 dB for v1 / v1.5 / FLUX.2 on the
    dev machine (the fast regime: 50.7 / 50.7 / 51.4 dB); held to 40 dB. benchmarks/RESULTS.md has the table."""
    case = golden.GoldenCase(name, GOLDEN)
    weights = {k: v.bfloat16().float() for k, v in case.weights().items()}
    io = case.io
    B, _, h, w = io["lq_latent"].shape
    out = {}
    for precision in ("reference", "fp8"):
        decoder = pid.load(weights, config=case.meta["net_kwargs"], precision=precision, fp8_emulation=True)
        H, W = h * decoder.config.pixels_per_latent, w * decoder.config.pixels_per_latent
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(B, 3, H, W, generator=gen)
        eps = [torch.randn(B, 3, H, W, generator=gen) for _ in range(3)]
        out[precision] = decoder.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"],
                                        noise=noise, step_noises=eps, progress=False)
    db = psnr(out["fp8"], out["reference"])
    print(f"{name}, fp8 (emulated) vs reference: {db:.2f} dB")
    assert 40.0 <= db < 48.0  # the e4m3 rounding costs what it costs, and fp8 is not the fast regime
    assert math.isfinite(db)


needs_fp8_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and _fp8.gemm_available(torch.device("cuda"))),
                                   reason="no GPU with fp8 tensor cores")


@needs_fp8_gpu
@pytest.mark.parametrize("M,K,N", [(333, 1536, 4608), (300, 4096, 1536)])
def test_cuda_fp8_gemm_within_the_e4m3_bound(M, K, N):
    """torch._scaled_mm on the GPU: within the emulation's bound of the float64 product (plus the bf16 rounding of
    its output), and close to the emulation of the same operands on the same GPU (only the summation differs)."""
    g = torch.Generator().manual_seed(M)
    x = (torch.randn(M, K, generator=g) * torch.logspace(-2, 1, M)[:, None]).bfloat16()
    w = torch.randn(N, K, generator=g) / math.sqrt(K)
    b = torch.rand(N, generator=g) * 2 - 1
    wq, ws = _fp8.quantize_weight(w)
    _, xs = _fp8.quantize_rows(x)
    dev = torch.device("cuda")
    xd, wqd, wsd, bd = x.to(dev), wq.to(dev), ws.to(dev), b.to(dev)
    x_q, _ = _fp8.quantize_rows(xd)
    assert _fp8._fp8_gemm_applies(x_q, wqd, torch.bfloat16)
    gemm = _fp8.linear(xd, wqd, wsd, bd, torch.bfloat16).double().cpu()
    emulated = _fp8.linear(xd, wqd, wsd, bd, torch.bfloat16, emulate=True).double().cpu()
    exact = x.double() @ w.double().t() + b.double()
    bound = fp8_linear_error_bound(x, w, xs, ws) + 2.0**-8 * exact.abs() * 1.01
    err = (gemm - exact).abs()
    assert (err <= bound).all(), (err / bound).max().item()
    assert ((gemm - emulated).abs() <= 2.0**-7 * exact.abs() + 1e-3 * exact.abs().max()).all()
