"""pid::rms_norm_modulate, pid::rms_norm_modulate_pixels, pid::gated_residual: compiled kernels vs the
reference and a float64 evaluation, the faces' layouts and routes, input errors, CUDA (skipped without a GPU). The
contract every op meets (registration, fake kernels, opcheck, torch.compile, the fallback, one device, autograd) is
tests/test_ops_contract.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pid.ops
from pid.ops import reference
from conftest import needs_ext, needs_cuda
from op_inputs import MOD_LAYOUTS, make_gated_inputs, make_norm_inputs, make_pixel_inputs


F32, BF16 = torch.float32, torch.bfloat16
EPS = 1e-6

# ---- tolerances -----------------------------------------------------------------------------------
# u = unit roundoff (half an ulp of 1): U32 for float32; a cast to bfloat16 adds up to U_BF16 relative,
# a "cast" to float32 nothing. gamma(n) = n U32 / (1 - n U32).
#
# rms_norm_modulate, against the exact value e = w·n·(1 + scale) + shift, n = x / sqrt(mean(x²) + eps32),
# computed in float64 from the same (already rounded) inputs:
#   mean(x²) + eps in float32, any summation order: relative error <= g = gamma(D + 2); the square root
#   halves it (rho_sqrt = g / 2 / (1 - g)); sqrt and the reciprocal each round once on CPU, rsqrtf is
#   within 2 ulp (4 U32) on CUDA: rho_r = (1 + rho_sqrt / (1 - rho_sqrt)) (1 + 4 U32) - 1 covers both.
#   x·r, w·n, 1 + scale and (w·n)·(1 + scale) round once each (U32), the cast of n to x's dtype and of
#   1 + scale to scale's dtype add u_x and u_scale:  P = (1 + rho_r)(1 + U32)^4 (1 + u_x)(1 + u_scale) - 1.
#   With A = |w·n·(1 + scale)|, the final add rounds relative to the result and the output cast adds u_out:
#     tol = A P + U32 (|e| + A P) + u_out (1 + U32)(|e| + A P).
# gated_residual, e = x + gate·y: the product rounds once (plus U_BF16 when gate and y are both bfloat16,
#   as PyTorch rounds their product to their common dtype), the add once, then the cast to x's dtype:
#     Pg = (1 + U32)(1 + u_prod) - 1;  tol = |g y| Pg + U32 (|e| + |g y| Pg) + u_out (1 + U32)(|e| + |g y| Pg).
# Kernel and reference are each within tol of e, so they differ by at most 2 tol; they round every step
# alike, so they are bit-identical whenever the float32 sum of squares is exact (integer-valued x below)
# and the gated residual, which has no sum, always.
U32 = 2.0**-24
U_BF16 = 2.0**-8
CAST_ROUNDOFF = {F32: 0.0, BF16: U_BF16}  # of casting a float32 value to the dtype
OUT_ROUNDOFF = {F32: U32, BF16: U_BF16}  # of the final rounding into the output dtype


def norm_exact_and_tolerance(x, weight, shift, scale, eps, out_dtype):
    eps32 = float(torch.tensor(eps, dtype=F32))  # the kernels and the reference add eps in float32
    x64 = x.double()
    D = x.shape[-1]
    n = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps32)
    prod = weight.double() * n * (1 + scale.double())
    exact = prod + shift.double()
    g = (D + 2) * U32 / (1 - (D + 2) * U32)
    rho_sqrt = 0.5 * g / (1 - g)
    rho_r = (1 + rho_sqrt / (1 - rho_sqrt)) * (1 + 4 * U32) - 1
    P = (1 + rho_r) * (1 + U32) ** 4 * (1 + CAST_ROUNDOFF[x.dtype]) * (1 + CAST_ROUNDOFF[scale.dtype]) - 1
    AP = prod.abs() * P
    u_out = OUT_ROUNDOFF[out_dtype or F32]
    return exact, AP + U32 * (exact.abs() + AP) + u_out * (1 + U32) * (exact.abs() + AP)


def gated_exact_and_tolerance(x, gate, y):
    prod = gate.double() * y.double()
    exact = x.double() + prod
    u_prod = U_BF16 if gate.dtype == y.dtype == BF16 else 0.0
    AP = prod.abs() * ((1 + U32) * (1 + u_prod) - 1)
    return exact, AP + U32 * (exact.abs() + AP) + OUT_ROUNDOFF[x.dtype] * (1 + U32) * (exact.abs() + AP)


def assert_within(got, exact, tol, what=""):
    err = (got.double() - exact).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {got.numel()} elements outside the tolerance; first at {i}: "
            f"got {got[i].item()!r}, expected {exact[i].item()!r}, tolerance {tol[i].item():.3g}"
        )


def assert_bits_equal(got, want, what=""):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    same = got.view(torch.int16 if got.dtype == BF16 else torch.int32) == want.view(
        torch.int16 if want.dtype == BF16 else torch.int32
    )
    if not same.all():
        i = tuple((~same).nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int((~same).sum())} elements differ; first at {i}: {got[i]!r} vs {want[i]!r}")


dtypes = st.sampled_from([F32, BF16])
sizes_D = st.integers(1, 80) | st.sampled_from([127, 129, 200, 1536])  # odd, not multiples of 8/16
norm_cases = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 40),  # L
    sizes_D,
    dtypes,  # x
    dtypes,  # shift/scale
    st.sampled_from([None, F32, BF16]),  # out_dtype
    st.sampled_from(MOD_LAYOUTS),
    st.integers(0, 2**31 - 1),  # seed
)
pixel_cases = st.tuples(
    st.integers(1, 12),  # N patches
    st.integers(1, 40) | st.just(256),  # P pixels per patch
    st.integers(1, 20) | st.just(16),  # c channels
    st.integers(1, 7),  # K chunks
    dtypes,
    dtypes,
    st.sampled_from([None, F32, BF16]),
    st.booleans(),  # padded mods rows
    st.data(),
)
gated_cases = st.tuples(
    st.integers(1, 3),
    st.integers(1, 40),
    sizes_D,
    dtypes,
    dtypes,
    dtypes,
    st.sampled_from(MOD_LAYOUTS),
    st.integers(0, 2**31 - 1),
)


def check_norm(args, out_dtype, got, integer_x=False):
    x = args[0]
    assert got.shape == x.shape and got.dtype == (out_dtype or F32) and got.device == x.device
    exact, tol = norm_exact_and_tolerance(*args, EPS, out_dtype)
    assert_within(got.cpu(), exact.cpu(), tol.cpu(), "vs float64")
    ref = reference.rms_norm_modulate(*args, EPS, out_dtype)
    assert_within(got.cpu(), ref.cpu().double(), 2 * tol.cpu(), "vs reference")
    if integer_x:
        assert_bits_equal(got, ref, "vs reference (exact sums)")


# ---- CPU kernels --------------------------------------------------------------------------------------


@needs_ext
@settings(max_examples=120, deadline=None)
@given(norm_cases, st.booleans())
def test_cpu_norm_modulate(case, integer_x):
    B, L, D, xd, md, od, layout, seed = case
    args = make_norm_inputs(B, L, D, xd, md, layout, seed, integer_x)
    check_norm(args, od, torch.ops.pid.rms_norm_modulate(*args, EPS, od), integer_x)


@needs_ext
@settings(max_examples=100, deadline=None)
@given(pixel_cases, st.booleans())
def test_cpu_norm_modulate_pixels(case, integer_x):
    N, P, c, K, xd, md, od, padded, data = case
    sc, hc = data.draw(st.integers(0, K - 1), "shift_chunk"), data.draw(st.integers(0, K - 1), "scale_chunk")
    x, w, mods = make_pixel_inputs(N, P, c, K, xd, md, padded, seed=N * P + c, integer_x=integer_x)
    got = torch.ops.pid.rms_norm_modulate_pixels(x, w, mods, sc, hc, EPS, od)
    assert got.shape == (N, P * c) and got.is_contiguous()
    shift, scale = mods[..., sc * c : (sc + 1) * c], mods[..., hc * c : (hc + 1) * c]
    check_norm((x, w, shift, scale), od, got.view(N, P, c), integer_x)
    ref = reference.rms_norm_modulate_pixels(x, w, mods, sc, hc, EPS, od)
    assert ref.shape == got.shape
    if integer_x:
        assert_bits_equal(got, ref, "pixels vs reference (exact sums)")


@needs_ext
@settings(max_examples=100, deadline=None)
@given(gated_cases)
def test_cpu_gated_residual(case):
    *shape, xd, gd, yd, layout, seed = case
    x, gate, y = make_gated_inputs(*shape, xd, gd, yd, layout, seed)
    got = torch.ops.pid.gated_residual(x, gate, y)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert_within(got, *gated_exact_and_tolerance(x, gate, y), "vs float64")
    assert_bits_equal(got, reference.gated_residual(x, gate, y), "vs reference")


# The network's sizes: MMDiT D = 1536 (image tokens of a 512 px image, text tokens), PiT c = 16, P = 256.
@needs_ext
@pytest.mark.parametrize("xd,md", [(F32, BF16), (F32, F32), (BF16, BF16)])
@pytest.mark.parametrize("integer_x", [False, True])
def test_cpu_large(xd, md, integer_x):
    args = make_norm_inputs(2, 300, 1536, xd, md, "chunk", integer_x=integer_x)
    for od in (None, BF16):
        check_norm(args, od, torch.ops.pid.rms_norm_modulate(*args, EPS, od), integer_x)
    x, w, mods = make_pixel_inputs(64, 256, 16, 6, xd, md, integer_x=integer_x)
    got = torch.ops.pid.rms_norm_modulate_pixels(x, w, mods, 0, 1, EPS)
    check_norm((x, w, mods[..., :16], mods[..., 16:32]), None, got.view(64, 256, 16), integer_x)
    g = mods[..., 32:48]
    y = torch.randn(64, 256, 16).to(md)
    assert_bits_equal(torch.ops.pid.gated_residual(x, g, y), reference.gated_residual(x, g, y))


@needs_ext
def test_special_values():
    # A zero row (n = 0: the output is the shift; with eps = 0 it is 0 * inf = NaN, as in the reference),
    # huge and tiny rows (no overflow or underflow in the float32 sum at these magnitudes), eps = 0.
    x = torch.stack([torch.zeros(37), torch.full((37,), 3e15), torch.full((37,), 1e-15), torch.randn(37)])[None]
    w, shift, scale = torch.randn(37), torch.randn(1, 1, 37), torch.randn(1, 1, 37)
    got = torch.ops.pid.rms_norm_modulate(x, w, shift, scale, EPS)
    assert_within(got, *norm_exact_and_tolerance(x, w, shift, scale, EPS, None), "eps=1e-6")
    assert torch.equal(got[0, 0], shift[0, 0])
    got = torch.ops.pid.rms_norm_modulate(x, w, shift, scale, 0.0)
    assert got[0, 0].isnan().all() and reference.rms_norm_modulate(x, w, shift, scale, 0.0)[0, 0].isnan().all()
    assert_within(got[:, 1:], *norm_exact_and_tolerance(x[:, 1:], w, shift, scale, 0.0, None), "eps=0")


@needs_ext
def test_nan_propagates():
    x, w, shift, scale = make_norm_inputs(1, 3, 20, F32, BF16)
    x[0, 1, 5] = float("nan")
    got = torch.ops.pid.rms_norm_modulate(x, w, shift, scale, EPS, BF16)
    assert got[0, 1].isnan().all() and not got[0, [0, 2]].isnan().any()


@pytest.mark.parametrize("xd,md,od", [(F32, BF16, None), (BF16, BF16, BF16), (F32, F32, None)])
def test_reference_matches_exact(xd, md, od):
    # The reference is held to the same bound, so the bound is not tuned to one implementation.
    args = make_norm_inputs(3, 33, 129, xd, md)
    exact, tol = norm_exact_and_tolerance(*args, EPS, od)
    assert_within(reference.rms_norm_modulate(*args, EPS, od), exact, tol, "reference vs float64")
    x, gate, y = make_gated_inputs(3, 33, 129, xd, md, md)
    assert_within(reference.gated_residual(x, gate, y), *gated_exact_and_tolerance(x, gate, y), "reference")


@needs_ext
@pytest.mark.parametrize("B,L", [(0, 5), (2, 0)])
def test_empty(B, L):
    args = make_norm_inputs(B, L, 8, F32, BF16, "contiguous")
    assert torch.ops.pid.rms_norm_modulate(*args, EPS).shape == (B, L, 8)
    x, w, mods = make_pixel_inputs(B, L, 4, 6, F32, BF16)
    assert torch.ops.pid.rms_norm_modulate_pixels(x, w, mods, 0, 1, EPS).shape == (B, L * 4)
    x, gate, y = make_gated_inputs(B, L, 8, F32, BF16, BF16, "contiguous")
    assert torch.ops.pid.gated_residual(x, gate, y).shape == (B, L, 8)


# ---- Python faces -----------------------------------------------------------------------------------


@needs_ext
def test_faces_use_kernels_and_handle_odd_layouts():
    x, w, shift, scale = make_norm_inputs(2, 9, 24, F32, BF16, integer_x=True)
    ref = reference.rms_norm_modulate(x, w, shift, scale, EPS)
    # Non-unit last-dimension stride and a non-contiguous weight: the face copies them; same bits.
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    st_ = shift.transpose(0, 2).contiguous().transpose(0, 2)
    wt = torch.stack([w, w], 1)[:, 0]
    assert xt.stride(-1) != 1 and st_.stride(-1) != 1 and not wt.is_contiguous()
    assert_bits_equal(pid.ops.rms_norm_modulate(xt, wt, st_, scale, EPS), ref)
    x, w, mods = make_pixel_inputs(3, 10, 5, 6, F32, BF16, integer_x=True)
    m_t = mods.transpose(1, 2).contiguous().transpose(1, 2)
    assert_bits_equal(
        pid.ops.rms_norm_modulate_pixels(x, w, m_t, 3, 4, EPS), reference.rms_norm_modulate_pixels(x, w, mods, 3, 4, EPS)
    )
    x, gate, y = make_gated_inputs(2, 9, 24, F32, BF16, BF16)
    y_t = y.transpose(1, 2).contiguous().transpose(1, 2)
    assert_bits_equal(pid.ops.gated_residual(x, gate, y_t), reference.gated_residual(x, gate, y))


@needs_ext
def test_faces_use_reference_for_other_dtypes():
    x, w, shift, scale = make_norm_inputs(1, 4, 8, F32, BF16)
    half = [t.half() for t in (x, shift, scale)]
    torch.testing.assert_close(
        pid.ops.rms_norm_modulate(half[0], w, half[1], half[2], EPS),
        reference.rms_norm_modulate(half[0], w, half[1], half[2], EPS),
    )
    # bfloat16 weight (not what PiD uses): the reference's rounding of weight * normed to bfloat16.
    wb = w.bfloat16()
    assert pid.ops.rms_norm_modulate(x, wb, shift, scale, EPS).dtype == reference.rms_norm_modulate(
        x, wb, shift, scale, EPS
    ).dtype
    # Mixed shift/scale dtypes and 2-D modulation vectors also go to the reference.
    for s, c in ((shift.float(), scale), (shift[0], scale[0])):
        torch.testing.assert_close(
            pid.ops.rms_norm_modulate(x, w, s, c, EPS), reference.rms_norm_modulate(x, w, s, c, EPS), rtol=0, atol=0
        )


# ---- input errors -----------------------------------------------------------------------------------


def _bad_norm_inputs():
    x, w, sh, sc = make_norm_inputs(2, 3, 5, F32, BF16)
    return [
        ("x must have shape \\[B, L, D\\]", (x[0], w, sh, sc, EPS)),
        ("x must be float32 or bfloat16", (x.half(), w, sh, sc, EPS)),
        ("weight must have shape \\[5\\]", (x, w[:4], sh, sc, EPS)),
        ("weight must be float32", (x, w.bfloat16(), sh, sc, EPS)),
        ("shift must have shape \\[B, 1, D\\]", (x, w, sh[..., :4], sc, EPS)),
        ("scale must have shape", (x, w, sh, torch.randn(2, 2, 5).bfloat16(), EPS)),
        ("scale must be float32 or bfloat16", (x, w, sh, sc.half(), EPS)),
        ("shift and scale must have the same dtype", (x, w, sh.float(), sc, EPS)),
        ("x must have unit stride in its last dimension", (torch.randn(2, 5, 3).transpose(1, 2), w, sh, sc, EPS)),
        ("out_dtype must be float32 or bfloat16", (x, w, sh, sc, EPS, torch.float16)),
    ]


def _bad_pixel_inputs():
    x, w, mods = make_pixel_inputs(2, 3, 4, 6, F32, BF16)
    return [
        ("x must have shape \\[N, P, c\\]", (x[0], w, mods, 0, 1, EPS)),
        ("mods must have shape \\[N, P, K\\*c\\]", (x, w, mods[..., :23], 0, 1, EPS)),
        ("mods must have shape", (x, w, mods[:1], 0, 1, EPS)),
        ("shift_chunk must be in \\[0, 6\\)", (x, w, mods, 6, 1, EPS)),
        ("scale_chunk must be in \\[0, 6\\)", (x, w, mods, 0, -1, EPS)),
        ("weight must have shape \\[4\\]", (x, w[:3], mods, 0, 1, EPS)),
        ("mods must be float32 or bfloat16", (x, w, mods.double(), 0, 1, EPS)),
        ("mods must have unit stride", (x, w, torch.randn(2, 24, 3).transpose(1, 2), 0, 1, EPS)),
        ("x must have at least one channel", (x[..., :0], w[:0], mods[..., :0], 0, 1, EPS)),
    ]


def _bad_gated_inputs():
    x, g, y = make_gated_inputs(2, 3, 5, F32, BF16, BF16)
    return [
        ("x must have shape \\[B, L, D\\]", (x[0], g, y)),
        ("y must have x's shape", (x, g, y[:, :2])),
        ("gate must have shape \\[B, 1, D\\]", (x, g[..., :4], y)),
        ("gate must be float32 or bfloat16", (x, g.half(), y)),
        ("x must be float32 or bfloat16", (x.double(), g, y)),
        ("y must have unit stride", (x, g, torch.randn(2, 5, 3).transpose(1, 2))),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_norm_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_norm_inputs(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.rms_norm_modulate(*args)


@needs_ext
@pytest.mark.parametrize("match,args", _bad_pixel_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_pixel_inputs(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.rms_norm_modulate_pixels(*args)


@needs_ext
@pytest.mark.parametrize("match,args", _bad_gated_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_gated_inputs(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.gated_residual(*args)


# ---- CUDA: skipped without a GPU (run on a lent GPU by benchmarks/device/run.sh) ------------------


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(norm_cases)
def test_cuda_norm_modulate(case):
    B, L, D, xd, md, od, layout, seed = case
    args = make_norm_inputs(B, L, D, xd, md, layout, seed, device="cuda")
    got = torch.ops.pid.rms_norm_modulate(*args, EPS, od)
    check_norm([a.cpu() for a in args], od, got.cpu())


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(pixel_cases)
def test_cuda_norm_modulate_pixels(case):
    N, P, c, K, xd, md, od, padded, data = case
    sc, hc = data.draw(st.integers(0, K - 1), "shift_chunk"), data.draw(st.integers(0, K - 1), "scale_chunk")
    x, w, mods = make_pixel_inputs(N, P, c, K, xd, md, padded, seed=N * P + c, device="cuda")
    got = torch.ops.pid.rms_norm_modulate_pixels(x, w, mods, sc, hc, EPS, od).cpu()
    assert got.shape == (N, P * c)
    x, w, mods = x.cpu(), w.cpu(), mods.cpu()
    check_norm((x, w, mods[..., sc * c : (sc + 1) * c], mods[..., hc * c : (hc + 1) * c]), od, got.view(N, P, c))


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(gated_cases)
def test_cuda_gated_residual(case):
    *shape, xd, gd, yd, layout, seed = case
    x, gate, y = make_gated_inputs(*shape, xd, gd, yd, layout, seed, device="cuda")
    got = torch.ops.pid.gated_residual(x, gate, y)
    assert_bits_equal(got, reference.gated_residual(x, gate, y), "CUDA gated vs reference")


@needs_cuda
@pytest.mark.parametrize("xd,md", [(F32, BF16), (BF16, BF16), (F32, F32)])
def test_cuda_large(xd, md):
    args = make_norm_inputs(2, 4096, 1536, xd, md, "chunk", device="cuda")
    for od in (None, BF16):
        check_norm([a.cpu() for a in args], od, torch.ops.pid.rms_norm_modulate(*args, EPS, od).cpu())
    x, w, mods = make_pixel_inputs(1024, 256, 16, 6, xd, md, device="cuda")
    got = torch.ops.pid.rms_norm_modulate_pixels(x, w, mods, 3, 4, EPS, BF16).cpu()
    x, w, mods = x.cpu(), w.cpu(), mods.cpu()
    check_norm((x, w, mods[..., 48:64], mods[..., 64:80]), BF16, got.view(1024, 256, 16))
