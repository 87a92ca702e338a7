"""pid::qk_norm_rope and pid::attention: compiled kernels vs float64 evaluations and the reference,
windowed attention vs its explicit mask, the faces' back ends and routes, input errors. The contract every op meets
(registration, fake kernels, opcheck, torch.compile, the fallback, one device, autograd) is
tests/test_ops_contract.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pid.ops
from pid import _extension
from pid.nn.rope import rope_1d, rope_2d
from pid.ops import reference
from conftest import needs_ext, needs_cuda
from op_inputs import make_norm_rope_inputs, make_qkv, windowed_inputs


U32 = 2.0**-24  # unit roundoff (half an ulp of 1) of float32
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


def gamma(n: int) -> float:
    """Bound on the relative error of n float32 roundings in sequence (a sum or dot product of n terms)."""
    return n * U32 / (1 - n * U32)


def _first_bad(got, exact, tol, what):
    err = (got.double() - exact).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {got.numel()} elements outside the tolerance; first at {i}: "
            f"got {got[i].item()!r}, exact {exact[i].item()!r}, tolerance {tol[i].item():.3g}"
        )


# ---- attention: float64 evaluation and error bound ---------------------------------------------------
#
# For query i, with exact scores s_j = scale q.k_j over its visible keys and exact weights w = softmax(s):
#  * a float32 score (dot product over d, the scale folded into q) is off by at most
#      delta_j = gamma(d + 2) * scale * sum_k |q_k k_jk| + 2 u32 |s_j - max s|       (last: exponent argument)
#  * exp (a few ulp: 4 u32) and the float32 sums of the weights and of the weighted values over Sk keys
#    (plus one rescale per chunk of keys: gamma(n), n = Sk + Sk/8 + 4) give
#      |o_i - exact_i| <= (2 max_j delta_j + 8 u32 + 2 gamma(n)) * sum_j w_j |v_j|
#  * rounding the result to the output dtype adds u_out * |exact_i| (to first order).
# An implementation that also rounds its scaled q, k and the weights to bfloat16 (as a bfloat16 SDPA may)
# adds 2 u_bf16 * scale * sum_k |q_k k_jk| to delta_j and u_bf16 to the weight error: low_precision_internals.
# One that rounds only the weights (pid's bfloat16 CUDA kernel, before its tensor-core p.v) adds u_bf16 to
# the weight error: bf16_weights.


def attention_exact_and_tol(
    q, k, v, window=None, grid=None, n_text=0, low_precision_internals=False, bf16_weights=False
):
    q64, k64, v64 = (t.double() for t in (q, k, v))
    d, Sk = q.shape[-1], k.shape[-2]
    scale = 1 / math.sqrt(d)
    s = q64 @ k64.transpose(-1, -2) * scale
    mag = q64.abs() @ k64.abs().transpose(-1, -2) * scale
    if window is not None:
        mask = reference.window_mask(window, grid, n_text, q.shape[-2])
        s = s.masked_fill(~mask, -math.inf)
        mag = mag.masked_fill(~mask, 0.0)
    w = torch.softmax(s, dim=-1)
    exact = w @ v64
    spread = (s.amax(-1, keepdim=True) - s).masked_fill(s == -math.inf, 0.0)
    u_in = 2 * UNIT_ROUNDOFF[torch.bfloat16] if low_precision_internals else 0.0
    delta = ((gamma(d + 2) + u_in) * mag + 2 * U32 * spread).amax(-1, keepdim=True)
    n = Sk + Sk // 8 + 4
    rounded_weights = low_precision_internals or bf16_weights
    weight_err = 2 * delta + 8 * U32 + 2 * gamma(n) + (UNIT_ROUNDOFF[torch.bfloat16] if rounded_weights else 0.0)
    e = weight_err * (w @ v64.abs())
    u_out = UNIT_ROUNDOFF[q.dtype]
    return exact, u_out * exact.abs() + (1 + u_out) * e


def assert_attention_close(
    got, q, k, v, window=None, grid=None, n_text=0, low_precision_internals=False, bf16_weights=False
):
    assert got.shape == q.shape and got.dtype == q.dtype and got.device == q.device
    exact, tol = attention_exact_and_tol(
        q.cpu(), k.cpu(), v.cpu(), window, grid, n_text, low_precision_internals, bf16_weights
    )
    _first_bad(got.cpu(), exact, tol, "attention")


def kernel_attention(q, k, v, window=None, grid=None, n_text=0):
    if window is None:
        return torch.ops.pid.attention(q, k, v, 0, 0, 0, 0)
    return torch.ops.pid.attention(q, k, v, window, grid[0], grid[1], n_text)


DTYPES = st.sampled_from([torch.float32, torch.bfloat16])
HEAD_DIMS = st.sampled_from([64, 72]) | st.integers(1, 80)

global_cases = st.tuples(
    st.integers(1, 2),  # B
    st.integers(1, 3),  # H
    st.integers(1, 150),  # Sq: crosses the 64-row tiles
    st.integers(1, 150),  # Sk: crosses the 64-key chunks
    HEAD_DIMS,
    DTYPES,
    st.sampled_from([0.5, 1.0, 3.0]),  # softmax sharpness
    st.integers(0, 2**31 - 1),
)

windowed_cases = st.tuples(
    st.integers(1, 2),  # B
    st.integers(1, 2),  # H
    st.integers(1, 11),  # grid_h
    st.integers(1, 13),  # grid_w
    st.sampled_from([0, 1, 5, 64, 70]) | st.integers(0, 20),  # n_text: 0 (PiT), several text tiles
    st.integers(1, 14),  # window: odd, even, 1, larger than the grid
    st.booleans(),  # image queries only (the last MMDiT block)
    st.sampled_from([8, 64, 72]) | st.integers(1, 40),
    DTYPES,
    st.integers(0, 2**31 - 1),
)


@needs_ext
@settings(max_examples=80, deadline=None)
@given(global_cases)
def test_cpu_global_matches_exact(case):
    B, H, Sq, Sk, d, dtype, sharp, seed = case
    q, k, v = make_qkv(B, H, Sq, Sk, d, dtype, seed, sharp)
    assert_attention_close(kernel_attention(q, k, v), q, k, v)


@needs_ext
@settings(max_examples=100, deadline=None)
@given(windowed_cases)
def test_cpu_windowed_matches_exact(case):
    B, H, gh, gw, n_text, window, image_only, d, dtype, seed = case
    q, k, v = windowed_inputs(B, H, gh, gw, n_text, image_only, d, dtype, seed)
    got = kernel_attention(q, k, v, window, (gh, gw), n_text)
    assert_attention_close(got, q, k, v, window, (gh, gw), n_text)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "B,H,Sq,Sk,d", [(1, 16, 256, 256, 72), (1, 4, 300, 556, 64), (2, 3, 1, 777, 72), (1, 2, 513, 65, 64)]
)
def test_cpu_global_large(B, H, Sq, Sk, d, dtype):
    q, k, v = make_qkv(B, H, Sq, Sk, d, dtype, sharp=3.0)
    assert_attention_close(kernel_attention(q, k, v), q, k, v)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "grid,n_text,window,image_only,d",
    [((20, 24), 70, 5, False, 64), ((20, 24), 70, 6, True, 64), ((17, 19), 0, 7, False, 72), ((3, 7), 3, 2, False, 72),
     ((1, 5), 0, 3, False, 72), ((1, 5), 2, 1, True, 64), ((40, 3), 0, 4, False, 72)],
)
def test_cpu_windowed_large(grid, n_text, window, image_only, d, dtype):
    q, k, v = windowed_inputs(1, 3, *grid, n_text, image_only, d, dtype, seed=5)
    assert_attention_close(kernel_attention(q, k, v, window, grid, n_text), q, k, v, window, grid, n_text)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_matches_exact(dtype):
    # The reference is held to a bound too, so the bound is not tuned to the kernel. A bfloat16 SDPA may
    # round its scaled inputs and weights to bfloat16: its bound says so.
    low = dtype == torch.bfloat16
    q, k, v = make_qkv(2, 3, 70, 90, 72, dtype, sharp=3.0)
    assert_attention_close(reference.attention(q, k, v), q, k, v, low_precision_internals=low)
    q, k, v = windowed_inputs(2, 2, 5, 7, 9, False, 64, dtype, seed=1)
    assert_attention_close(reference.attention(q, k, v, 3, (5, 7), 9), q, k, v, 3, (5, 7), 9, low_precision_internals=low)


@needs_ext
@settings(max_examples=40, deadline=None)
@given(windowed_cases)
def test_cpu_kernel_matches_reference(case):
    # |kernel - reference| <= tol(kernel) + tol(reference): both bounds hold, so their sum must.
    B, H, gh, gw, n_text, window, image_only, d, dtype, seed = case
    q, k, v = windowed_inputs(B, H, gh, gw, n_text, image_only, d, dtype, seed)
    low = dtype == torch.bfloat16
    for w in (None, window):
        args = (w, (gh, gw), n_text) if w is not None else (None, None, 0)
        got, ref = kernel_attention(q, k, v, *args), reference.attention(q, k, v, *args)
        _, tol_k = attention_exact_and_tol(q, k, v, *args)
        _, tol_r = attention_exact_and_tol(q, k, v, *args, low_precision_internals=low)
        _first_bad(got, ref.double(), tol_k + tol_r, "kernel vs reference")


def test_window_mask_rule():
    # 1 x 5 grid, window 3: [0,3) [0,3) [1,4) [2,5) [2,5) (shifted at the borders, always 3 wide).
    m = reference.window_mask(3, (1, 5))
    want = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]).bool()
    assert torch.equal(m, want)
    # Even window 2: w/2 before, w/2 - 1 after.
    assert torch.equal(reference.window_mask(2, (1, 3)), torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 1]]).bool())
    # Text rows see everything, image rows see all text keys; image-only queries are the last rows.
    m = reference.window_mask(1, (2, 2), n_text=2)
    assert m.shape == (6, 6) and m[:2].all() and m[:, :2].all()
    assert torch.equal(m[2:, 2:], torch.eye(4, dtype=torch.bool))
    assert torch.equal(reference.window_mask(1, (2, 2), n_text=2, n_queries=4), m[2:])
    # 2-D: 4 x 4 grid, window 3 around (0, 0): rows 0-2 x cols 0-2.
    m = reference.window_mask(3, (4, 4))
    assert torch.equal(m[0].view(4, 4), torch.tensor([[1, 1, 1, 0]] * 3 + [[0, 0, 0, 0]]).bool())
    assert int(m.sum(-1).min()) == int(m.sum(-1).max()) == 9
    # A window covering the grid is global.
    assert reference.window_mask(7, (3, 7), n_text=4).all()


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid,n_text,image_only", [((3, 7), 0, False), ((3, 7), 5, False), ((9, 9), 70, True), ((1, 5), 2, False)])
def test_window_covering_grid_equals_global(grid, n_text, image_only, dtype):
    q, k, v = windowed_inputs(2, 2, *grid, n_text, image_only, 72, dtype, seed=2)
    glob = pid.ops.attention(q, k, v)
    for w in (max(grid), max(grid) + 3):
        # The face computes a covering window as global attention: exactly the global result.
        assert torch.equal(pid.ops.attention(q, k, v, window=w, grid=grid, n_text=n_text), glob)
        # The windowed kernel itself (all rectangles cover the grid) agrees within the bound.
        got = kernel_attention(q, k, v, w, grid, n_text)
        _, tol = attention_exact_and_tol(q, k, v)
        _first_bad(got, kernel_attention(q, k, v).double(), 2 * tol, "windowed w >= grid vs global")


@needs_ext
@pytest.mark.parametrize("Sq", [0])
def test_empty_queries(Sq):
    q, k, v = make_qkv(2, 3, Sq, 5, 8, torch.float32)
    assert kernel_attention(q, k, v).shape == (2, 3, 0, 8)


@needs_ext
def test_output_layout_and_strided_inputs():
    B, N, H, d = 2, 37, 3, 72
    qkv = torch.randn(B, N, 3 * H * d).view(B, N, 3, H, d)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, N, d] views, not contiguous
    assert not v.is_contiguous()
    out = pid.ops.attention(q, k, v)
    assert out.stride() == (N * H * d, d, H * d, 1)  # [B, N, H, d] memory: merging heads is a view
    assert out.transpose(1, 2).reshape(B, N, H * d).data_ptr() == out.data_ptr()
    assert_attention_close(out, q, k, v)


@needs_ext
def test_face_promotes_and_ignores_autocast():
    # The face computes in the promoted dtype of q, k, v; autocast has no say (the caller casts, as the network
    # does from its plan), on the kernel path and on the SDPA path alike.
    q, k, v = make_qkv(1, 2, 9, 9, 64, torch.float32)
    for backend in ("kernel", "sdpa"):
        plain = pid.ops.attention(q, k, v.bfloat16(), backend=backend)
        with torch.autocast("cpu", torch.bfloat16):
            under_autocast = pid.ops.attention(q, k, v.bfloat16(), backend=backend)
        assert plain.dtype == under_autocast.dtype == torch.float32
        assert torch.equal(plain, under_autocast)
        assert_attention_close(plain, q, k, v.bfloat16().float())
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    out = pid.ops.attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    assert_attention_close(out, qb, kb, vb)


def test_global_backend_argument():
    assert pid.ops.default_attention_backend("cpu") == "kernel"  # measured faster on the CPU
    assert pid.ops.default_attention_backend("cuda") == "sdpa"  # until pid's CUDA kernels are measured on a GPU
    q, k, v = make_qkv(1, 2, 6, 7, 8, torch.float32)
    assert torch.equal(pid.ops.attention(q, k, v, backend="sdpa"), F.scaled_dot_product_attention(q, k, v))
    if _extension.available():
        assert torch.equal(pid.ops.attention(q, k, v), kernel_attention(q, k, v))  # None: the device's default
        assert torch.equal(pid.ops.attention(q, k, v, backend="kernel"), kernel_attention(q, k, v))
    # use_kernel=False: never pid's kernel
    assert torch.equal(pid.ops.attention(q, k, v, backend="kernel", use_kernel=False),
                       F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="'kernel', 'sdpa', 'fa4' or 'auto'"):
        pid.ops.attention(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="autotune="):
        pid.ops.attention(q, k, v, backend="auto")


@needs_ext
def test_global_backend_auto(caplog):
    q, k, v = make_qkv(1, 2, 70, 90, 64, torch.float32)
    outs = {"kernel": kernel_attention(q, k, v), "sdpa": F.scaled_dot_product_attention(q, k, v)}
    # Each backend made the slow one in turn (the timer sees the kernel first): auto takes the other, times once per
    # shape (two timings), and says what it measured.
    for times, want in (([9.0, 1.0], "sdpa"), ([1.0, 9.0], "kernel")):
        fake = iter(times)
        autotune = pid.ops.AttentionAutotune(timer=lambda fn, device: next(fake))
        with caplog.at_level("INFO", logger="pid.ops._attention"):
            assert torch.equal(pid.ops.attention(q, k, v, backend="auto", autotune=autotune), outs[want])
            assert torch.equal(pid.ops.attention(q, k, v, backend="auto", autotune=autotune), outs[want])  # no 3rd
        assert len(autotune) == 1
        assert f"using {want}" in caplog.text
        caplog.clear()
    # Timed for real: one of the two, exactly.
    got = pid.ops.attention(q, k, v, backend="auto", autotune=pid.ops.AttentionAutotune())
    assert any(torch.equal(got, o) for o in outs.values())
    # Bounded: the least recently used shape is forgotten.
    autotune = pid.ops.AttentionAutotune(max_shapes=2, timer=lambda fn, device: 1.0)
    shapes = [make_qkv(1, 2, n, n, 64, torch.float32, seed=n) for n in (5, 6, 7)]
    for qkv in shapes:
        pid.ops.attention(*qkv, backend="auto", autotune=autotune)
    assert len(autotune) == 2
    # torch.compile traces "auto" without a graph break and without timing: SDPA for an unmeasured shape.
    never = pid.ops.AttentionAutotune(timer=lambda fn, device: pytest.fail("timed while tracing"))
    q2, k2, v2 = make_qkv(1, 2, 33, 33, 64, torch.float32, seed=5)
    compiled = torch.compile(lambda *a: pid.ops.attention(*a, backend="auto", autotune=never), backend="aot_eager",
                             fullgraph=True)
    assert torch.equal(compiled(q2, k2, v2), F.scaled_dot_product_attention(q2, k2, v2))
    # Inputs the kernel cannot take: SDPA without timing.
    q16, k16, v16 = (t.half() for t in (q, k, v))
    assert torch.equal(pid.ops.attention(q16, k16, v16, backend="auto", autotune=never),
                       F.scaled_dot_product_attention(q16, k16, v16))


def _bad_attention_inputs():
    q, k, v = make_qkv(1, 2, 6, 6, 8, torch.float32)
    return [
        ("q must have shape \\[B, H, Sq, head_dim\\]", (q[0], k, v, 0, 0, 0, 0)),
        ("q must be float32 or bfloat16", (q.half(), k.half(), v.half(), 0, 0, 0, 0)),
        ("k must have shape", (q, k[..., :4], v, 0, 0, 0, 0)),
        ("v must have k's shape", (q, k, v[:, :, :5], 0, 0, 0, 0)),
        ("k must have q's dtype", (q, k.bfloat16(), v, 0, 0, 0, 0)),
        ("need at least one key", (q, k[:, :, :0], v[:, :, :0], 0, 0, 0, 0)),
        ("last dimension \\(head_dim\\) must be contiguous", (q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3), 0, 0, 0, 0)),
        ("window must be >= 0", (q, k, v, -1, 2, 3, 0)),
        ("needs the image grid", (q, k, v, 3, 0, 6, 0)),
        ("must be n_text \\+ grid_h \\* grid_w", (q, k, v, 3, 2, 2, 1)),
        ("the queries must be all", (q[:, :, :3], k, v, 3, 2, 2, 2)),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_attention_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_attention_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.attention(*args)


def test_face_window_errors():
    q, k, v = make_qkv(1, 2, 6, 6, 8, torch.float32)
    with pytest.raises(ValueError, match="positive int"):
        pid.ops.attention(q, k, v, window=0, grid=(2, 3))
    with pytest.raises(ValueError, match="needs grid"):
        pid.ops.attention(q, k, v, window=3)
    with pytest.raises(ValueError, match="6 keys, but n_text"):
        pid.ops.attention(q, k, v, window=3, grid=(2, 2))


# ---- qk_norm_rope ---------------------------------------------------------------------------------
#
# Float64 evaluation of the op on the same inputs: r = x / sqrt(mean(x^2) + eps), y = w r, rotated pairs.
# Float32 evaluation: r is off by gamma(d + 4) |r| (sum of squares, mean, sqrt, division, product), then
# cast to qkv's dtype (u_in |r|: 0 for float32 input); y = w r adds u_y |w r| (u_bf16 when qkv and w
# are bfloat16, else u32); each rotated value a c - b s adds |c| e_a + |s| e_b + 2 u32 (|a c| + |b s|),
# (and likewise a s + b c), then the result is rounded to the promoted dtype and the output dtype (u_res |exact|).


def norm_rope_exact_and_tol(qkv, w, rope, eps, which, out_dtype):
    x = qkv[:, :, which].double()  # [B, N, H, d]
    r = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    w64 = w.double()
    bf16_in = qkv.dtype == torch.bfloat16
    both_bf16 = bf16_in and w.dtype == torch.bfloat16
    u_in = UNIT_ROUNDOFF[torch.bfloat16] if bf16_in else 0.0
    u_y = UNIT_ROUNDOFF[torch.bfloat16] if both_bf16 else U32
    d = x.shape[-1]
    e_r = (u_in + gamma(d + 4) * (1 + u_in)) * r.abs()
    y = w64 * r
    e_y = w64.abs() * e_r * (1 + u_y) + u_y * y.abs()
    if rope is None:
        exact, e = y, e_y
    else:
        cos, sin = (t.double()[None, :, None, :] for t in rope)
        a, b = y[..., 0::2], y[..., 1::2]
        ea, eb = e_y[..., 0::2], e_y[..., 1::2]
        ya, yb = a.abs() + ea, b.abs() + eb
        ra, rb = a * cos - b * sin, a * sin + b * cos
        c, s = cos.abs(), sin.abs()
        e_ra = c * ea + s * eb + 2 * U32 * (ya * c + yb * s)
        e_rb = s * ea + c * eb + 2 * U32 * (ya * s + yb * c)
        exact = torch.stack([ra, rb], -1).flatten(-2)
        e = torch.stack([e_ra, e_rb], -1).flatten(-2)
    u_res = UNIT_ROUNDOFF[torch.bfloat16] if (both_bf16 or out_dtype == torch.bfloat16) else 0.0
    tol = u_res * exact.abs() + (1 + u_res) * e
    return exact.transpose(1, 2), tol.transpose(1, 2)  # [B, H, N, d]


norm_rope_cases = st.tuples(
    st.integers(1, 2),  # B
    st.integers(1, 40),  # N
    st.integers(1, 4),  # H
    st.sampled_from([64, 72]) | st.integers(1, 40).map(lambda h: 2 * h),  # d even
    DTYPES,  # qkv
    DTYPES,  # weights
    DTYPES,  # output
    st.sampled_from(["none", "text", "image"]),
    st.integers(0, 2**31 - 1),
)


def assert_norm_rope_close(q, k, qkv, qw, kw, rope, eps, out_dtype):
    for which, (got, w) in enumerate(((q, qw), (k, kw))):
        exact, tol = norm_rope_exact_and_tol(qkv, w, rope, eps, which, out_dtype)
        _first_bad(got, exact, tol, "qk"[which])


@needs_ext
@settings(max_examples=100, deadline=None)
@given(norm_rope_cases)
def test_cpu_qk_norm_rope_matches_exact(case):
    B, N, H, d, in_dt, w_dt, out_dt, rope_kind, seed = case
    qkv, qw, kw, rope = make_norm_rope_inputs(B, N, H, d, in_dt, w_dt, rope_kind, seed)
    q, k = (torch.empty(B, H, N, d, dtype=out_dt) for _ in range(2))
    cos, sin = rope if rope is not None else (None, None)
    torch.ops.pid.qk_norm_rope(qkv, qw, kw, cos, sin, 1e-6, q, 0, k, 0)
    assert_norm_rope_close(q, k, qkv, qw, kw, rope, 1e-6, out_dt)
    # The reference, held to the same bound, and the kernel agree within the two bounds.
    rq, rk = reference.qk_norm_rope(qkv, qw, kw, rope, 1e-6, out_dt)
    assert_norm_rope_close(rq, rk, qkv, qw, kw, rope, 1e-6, out_dt)


@needs_ext
@pytest.mark.parametrize("in_dt,w_dt", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_qk_norm_rope_network_dtypes_equal_reference(in_dt, w_dt):
    # The network's regimes: float32; bf16 projections with float32 weights (reference + autocast);
    # bf16 throughout (fast). Same operations in the same order: equal up to the sum-of-squares order,
    # which can move a bfloat16 rounding by one ulp.
    qkv, qw, kw, rope = make_norm_rope_inputs(2, 33, 3, 72, in_dt, w_dt, "image", seed=4)
    got = pid.ops.qk_norm_rope(qkv, qw, kw, rope)
    ref = reference.qk_norm_rope(qkv, qw, kw, rope)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype == torch.promote_types(in_dt, w_dt)
        u = UNIT_ROUNDOFF[a.dtype] if in_dt == torch.float32 else UNIT_ROUNDOFF[torch.bfloat16]
        torch.testing.assert_close(a, b, rtol=4 * u, atol=4 * u * float(b.abs().max()))


@needs_ext
@pytest.mark.parametrize("text_out", [True, False])
def test_qk_norm_rope_joint_buffer(text_out):
    # Text and image streams written into the two halves of one [text, image] buffer.
    B, H, d, n_txt, grid = 2, 3, 64, 7, (3, 5)
    L = grid[0] * grid[1]
    ty, wy, wky, _ = make_norm_rope_inputs(B, n_txt, H, d, torch.bfloat16, torch.float32, "none", seed=1)
    tx, wx, wkx, _ = make_norm_rope_inputs(B, L, H, d, torch.bfloat16, torch.float32, "none", seed=2)
    ry, rx = rope_1d(d, n_txt), rope_2d(d, *grid)
    k = torch.empty(B, H, n_txt + L, d, dtype=torch.bfloat16)
    q = torch.empty(B, H, n_txt + L if text_out else L, d, dtype=torch.bfloat16)
    pid.ops.qk_norm_rope(ty, wy, wky, ry, out=(q if text_out else None, k), offsets=(0, 0))
    pid.ops.qk_norm_rope(tx, wx, wkx, rx, out=(q, k), offsets=(n_txt if text_out else 0, n_txt))
    qy, ky = pid.ops.qk_norm_rope(ty, wy, wky, ry, out_dtype=torch.bfloat16)
    qx, kx = pid.ops.qk_norm_rope(tx, wx, wkx, rx, out_dtype=torch.bfloat16)
    assert torch.equal(k, torch.cat([ky, kx], 2))
    assert torch.equal(q, torch.cat([qy, qx], 2) if text_out else qx)


def _bad_norm_rope_inputs():
    qkv, qw, kw, rope = make_norm_rope_inputs(1, 5, 2, 8, torch.float32, torch.float32, "text")
    cos, sin = rope
    o = lambda rows=5, dt=torch.float32: torch.empty(1, 2, rows, 8, dtype=dt)  # noqa: E731
    return [
        ("qkv must have shape \\[B, N, 3, H, head_dim\\]", (qkv[:, :, :2], qw, kw, cos, sin, 1e-6, o(), 0, o(), 0)),
        ("head_dim must be even", (qkv[..., :7], qw[:7], kw[:7], None, None, 1e-6, o(), 0, None, 0)),
        ("qkv must be float32 or bfloat16", (qkv.half(), qw, kw, cos, sin, 1e-6, o(), 0, o(), 0)),
        ("q_weight must have shape \\[head_dim\\]", (qkv, qw[:4], kw, cos, sin, 1e-6, o(), 0, o(), 0)),
        ("one dtype", (qkv, qw, kw.bfloat16(), cos, sin, 1e-6, o(), 0, o(), 0)),
        ("cos and sin must be given together", (qkv, qw, kw, cos, None, 1e-6, o(), 0, o(), 0)),
        ("cos must have shape \\[N, head_dim / 2\\]", (qkv, qw, kw, cos[:4], sin[:4], 1e-6, o(), 0, o(), 0)),
        ("sin must be float32", (qkv, qw, kw, cos, sin.double(), 1e-6, o(), 0, o(), 0)),
        ("give q_out, k_out or both", (qkv, qw, kw, cos, sin, 1e-6, None, 0, None, 0)),
        ("must lie within its 5 rows", (qkv, qw, kw, cos, sin, 1e-6, o(), 1, o(), 0)),
        ("q_out and k_out must have one dtype", (qkv, qw, kw, cos, sin, 1e-6, o(), 0, o(dt=torch.bfloat16), 0)),
        ("k_out must be contiguous", (qkv, qw, kw, cos, sin, 1e-6, o(), 0, o(10)[:, :, ::2], 0)),
        ("k_out must have shape", (qkv, qw, kw, cos, sin, 1e-6, o(), 0, o()[0], 0)),
        ("qkv's last dimension must be contiguous", (qkv.transpose(3, 4), qw[:2], kw[:2], None, None, 1e-6, None, 0, torch.empty(1, 8, 5, 2), 0)),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_norm_rope_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_qk_norm_rope_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.qk_norm_rope(*args)


def test_face_norm_rope_reference_for_other_dtypes():
    # The face's allocating route (out=None); the contract checks float64 through given buffers.
    qkv, qw, kw, rope = make_norm_rope_inputs(1, 4, 2, 8, torch.float32, torch.float32, "text")
    qkv64, w64 = qkv.double(), qw.double()
    rope64 = tuple(t.double() for t in rope)
    for a, b in zip(pid.ops.qk_norm_rope(qkv64, w64, w64, rope64), reference.qk_norm_rope(qkv64, w64, w64, rope64)):
        assert torch.equal(a, b)


@needs_ext
def test_qk_norm_rope_face_allocating_compiles():
    # The face's own output buffers (out=None) in the graph; the contract compiles the op with given buffers.
    qkv = torch.randn(2, 5, 3, 2, 8)
    w = torch.randn(8)
    rope = rope_2d(8, 1, 5)
    c = torch.compile(pid.ops.qk_norm_rope, backend="aot_eager", fullgraph=True)
    for a, b in zip(c(qkv, w, w, rope), pid.ops.qk_norm_rope(qkv, w, w, rope)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- CUDA: skipped without a GPU (run on a lent GPU by benchmarks/device/run.sh) ------------------


def cuda_rounds_weights(dtype):
    """The bfloat16 CUDA kernel (tensor cores) rounds the softmax weights to bfloat16 before p.v."""
    return dtype == torch.bfloat16


cuda_global_cases = st.tuples(
    st.integers(1, 2), st.integers(1, 3), st.integers(1, 200), st.integers(1, 200), st.sampled_from([64, 72]),
    DTYPES, st.sampled_from([0.5, 1.0, 3.0]), st.integers(0, 2**31 - 1),
)


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(cuda_global_cases)
def test_cuda_global_matches_exact(case):
    B, H, Sq, Sk, d, dtype, sharp, seed = case
    q, k, v = make_qkv(B, H, Sq, Sk, d, dtype, seed, sharp, device="cuda")
    assert_attention_close(kernel_attention(q, k, v), q, k, v, bf16_weights=cuda_rounds_weights(dtype))


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(windowed_cases.map(lambda c: (*c[:7], 72 if c[7] % 2 else 64, *c[8:])))  # head_dim 64 / 72
def test_cuda_windowed_matches_exact(case):
    B, H, gh, gw, n_text, window, image_only, d, dtype, seed = case
    q, k, v = windowed_inputs(B, H, gh, gw, n_text, image_only, d, dtype, seed, device="cuda")
    got = kernel_attention(q, k, v, window, (gh, gw), n_text)
    assert_attention_close(got, q, k, v, window, (gh, gw), n_text, bf16_weights=cuda_rounds_weights(dtype))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid,n_text,window", [((64, 64), 300, 9), ((64, 64), 0, 16), ((33, 47), 0, 8)])
def test_cuda_large(grid, n_text, window, dtype):
    q, k, v = windowed_inputs(1, 2, *grid, n_text, False, 64 if n_text else 72, dtype, seed=7, device="cuda")
    rounded = cuda_rounds_weights(dtype)
    assert_attention_close(kernel_attention(q, k, v), q, k, v, bf16_weights=rounded)
    got = kernel_attention(q, k, v, window, grid, n_text)
    assert_attention_close(got, q, k, v, window, grid, n_text, bf16_weights=rounded)


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(norm_rope_cases)
def test_cuda_qk_norm_rope_matches_exact(case):
    B, N, H, d, in_dt, w_dt, out_dt, rope_kind, seed = case
    qkv, qw, kw, rope = make_norm_rope_inputs(B, N, H, d, in_dt, w_dt, rope_kind, seed)
    q, k = (torch.empty(B, H, N + 2, d, dtype=out_dt, device="cuda") for _ in range(2))
    cos, sin = (t.cuda() for t in rope) if rope is not None else (None, None)
    torch.ops.pid.qk_norm_rope(qkv.cuda(), qw.cuda(), kw.cuda(), cos, sin, 1e-6, q, 2, k, 1)
    assert_norm_rope_close(q[:, :, 2:].cpu(), k[:, :, 1:-1].cpu(), qkv, qw, kw, rope, 1e-6, out_dt)


@needs_cuda
def test_cuda_face_other_head_dims_use_reference():
    # Head dims the CUDA kernel lacks go to the reference.
    q8, k8, v8 = make_qkv(1, 2, 5, 5, 8, torch.float32, device="cuda")
    torch.testing.assert_close(pid.ops.attention(q8, k8, v8, 1, (1, 5)), reference.attention(q8, k8, v8, 1, (1, 5)))


@needs_cuda
def test_cuda_head_dim_error():
    q, k, v = make_qkv(1, 2, 5, 5, 64, torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match="head_dim 64 or 72"):
        torch.ops.pid.attention(q[..., :8], k[..., :8], v[..., :8], 0, 0, 0, 0)


@needs_ext
def test_auto_choices_outlive_the_process(tmp_path, caplog):
    """With a file, what "auto" timed is not timed again by a new AttentionAutotune (a new process, a new decoder); a
    damaged file is ignored with a warning; another machine or version keys its own entries."""
    path = tmp_path / "attention.json"
    q, k, v = make_qkv(1, 2, 40, 40, 64, torch.float32)
    sdpa_faster = iter([9.0, 1.0])
    first = pid.ops.AttentionAutotune(path=path, timer=lambda fn, device: next(sdpa_faster))
    assert first.choose(q, k, v) == "sdpa"
    entry = json.loads(path.read_text())
    assert list(entry.values()) == ["sdpa"]
    key = next(iter(entry))
    assert f"torch {torch.__version__}" in key and "float32 | q [1, 2, 40, 64] | k [1, 2, 40, 64]" in key
    again = pid.ops.AttentionAutotune(path=path, timer=lambda fn, device: pytest.fail("timed again"))
    assert again.choose(q, k, v) == "sdpa"
    assert torch.equal(pid.ops.attention(q, k, v, backend="auto", autotune=again),
                       F.scaled_dot_product_attention(q, k, v))
    path.write_text(json.dumps({key.replace(torch.__version__, "0.0"): "kernel"}))  # another torch: its own entry
    kernel_faster = iter([1.0, 9.0])
    other = pid.ops.AttentionAutotune(path=path, timer=lambda fn, device: next(kernel_faster))
    assert other.choose(q, k, v) == "kernel" and len(json.loads(path.read_text())) == 2
    path.write_text("{damaged")
    with caplog.at_level("WARNING", logger="pid.ops._attention"):
        fresh = pid.ops.AttentionAutotune(path=path, timer=lambda fn, device: 1.0)
        assert fresh.choose(q, k, v) in ("kernel", "sdpa")
    assert "ignoring the attention timings" in caplog.text and json.loads(path.read_text())  # rewritten whole
