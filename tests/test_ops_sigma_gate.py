"""pid::sigma_gate and pid::sigma_gate_apply: compiled kernels vs a float64 evaluation, the face's routes (fused kernel,
GEMM + epilogue, reference), input errors. The contract every op meets (registration, fake kernels, opcheck,
torch.compile, the fallback, one device, autograd) is tests/test_ops_contract.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pid.ops
from pid.ops import reference
from conftest import needs_ext, needs_cuda
from op_inputs import MIXED
from op_inputs import make_sigma_gate_apply_inputs as make_apply_inputs
from op_inputs import make_sigma_gate_inputs as make_inputs


# Tolerances. A float32 evaluation of the op (any summation order, FMA or not) differs from the exact
# result on the same (already rounded) inputs by at most
#   e32 = 1/4 * |lq| * gamma(D + 2) * (sum_k |x_k w_k| + |lq_logit| + |alpha_sigma|)   (logit error; sigmoid' <= 1/4)
#       + 8 u32 * (|x| + |lq|)                                                          (sigmoid, product, sum)
# with gamma(n) = n u32 / (1 - n u32). Rounding the result to the output dtype adds u_out * |out|.
# u is the unit roundoff (half an ulp of 1) of each dtype.
U32 = 2.0**-24
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


def exact_and_tolerance(x, lq, lq_logit, w_x, alpha_sigma):
    x64, q64, l64, w64 = (t.double() for t in (x, lq, lq_logit, w_x))
    a64 = alpha_sigma.double().view(-1, 1, 1)
    exact = x64 + torch.sigmoid(x64 @ w64.T + l64 - a64) * q64
    n = x.shape[-1] + 2
    gamma = n * U32 / (1 - n * U32)
    magnitude = x64.abs() @ w64.abs().T + l64.abs() + a64.abs()
    e32 = 0.25 * q64.abs() * gamma * magnitude + 8 * U32 * (x64.abs() + q64.abs())
    u = UNIT_ROUNDOFF[x.dtype]
    return exact, u * exact.abs() + (1 + u) * e32


def assert_close_to_exact(got, args):
    x = args[0]
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    exact, tol = exact_and_tolerance(*args)
    err = (got.double() - exact).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{int(bad.sum())} of {got.numel()} elements outside the tolerance; first at {i}: "
            f"got {got[i].item()!r}, exact {exact[i].item()!r}, tolerance {tol[i].item():.3g}"
        )


DTYPES = [torch.float32, torch.bfloat16, MIXED]


shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 40),  # L: B * L crosses the CPU kernel's 16-token blocks
    st.integers(1, 80) | st.sampled_from([127, 129, 200]),  # D: odd, not multiples of 8/16
    st.booleans(),  # per_dim: G = D, else G = 1
    st.sampled_from(DTYPES),
    st.integers(0, 2**31 - 1),  # seed
)
LARGE = [(2, 37, 600, True), (1, 300, 1536, False), (1, 64, 1536, True)]


@needs_ext
@settings(max_examples=80, deadline=None)
@given(shapes)
def test_cpu_kernel_matches_exact(case):
    *shape, dtype, seed = case
    args = make_inputs(*shape, dtype, seed)
    assert_close_to_exact(torch.ops.pid.sigma_gate(*args), args)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LARGE)
def test_cpu_kernel_large(shape, dtype):
    args = make_inputs(*shape, dtype)
    assert_close_to_exact(torch.ops.pid.sigma_gate(*args), args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_dim", [False, True])
def test_reference_matches_exact(per_dim, dtype):
    # The reference is held to the same bound, so the bound is not tuned to one implementation.
    args = make_inputs(3, 33, 129, per_dim, dtype)
    assert_close_to_exact(reference.sigma_gate(*args), args)


@needs_ext
@pytest.mark.parametrize("B,L", [(0, 5), (2, 0)])
def test_empty(B, L):
    args = make_inputs(B, L, 8, True, torch.float32)
    assert torch.ops.pid.sigma_gate(*args).shape == (B, L, 8)


@needs_ext
def test_face_makes_inputs_contiguous():
    x, lq, lq_logit, w_x, a = make_inputs(2, 9, 24, True, torch.float32)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    w_t = w_x.T.contiguous().T
    assert not xt.is_contiguous() and not w_t.is_contiguous()
    assert_close_to_exact(pid.ops.sigma_gate(xt, lq, lq_logit, w_t, a), (x, lq, lq_logit, w_x, a))


@needs_ext
def test_face_mixed_dtypes():
    # x float32 with bfloat16 weights and features (the fast path): the fused kernel per token; per channel a float32
    # GEMM and the epilogue without autocast (float32 math, the bound of every kernel).
    per_token = make_inputs(2, 9, 24, False, MIXED)
    assert torch.equal(pid.ops.sigma_gate(*per_token), torch.ops.pid.sigma_gate(*per_token))
    per_dim = make_inputs(2, 9, 24, True, MIXED)
    assert_close_to_exact(pid.ops.sigma_gate(*per_dim), per_dim)


def mixed_per_dim_bf16_logit(device):
    """Per channel, float32 x with bfloat16 weights and logit_dtype=bfloat16 (the fast path's v1 gates): the logit
    is the official content_proj Linear's, x·W_xᵀ + lq_logit with x rounded to bfloat16, summed in float32 and
    rounded once to bfloat16. Checked against that logit in float64, allowing the float32 sum's error
    gamma(D+2)·mag and one bfloat16 rounding of the logit, then the epilogue's bound; the face and its reference
    (use_kernel=False) both."""
    B, L, D = 2, 37, 136
    x, lq, lq_logit, w_x, a = make_inputs(B, L, D, True, MIXED, seed=5, device=device)
    xb, w, ll = x.bfloat16().double(), w_x.double(), lq_logit.double()
    z = xb @ w.T + ll
    gamma = (D + 2) * U32 / (1 - (D + 2) * U32)
    err_sum = gamma * (xb.abs() @ w.abs().T + ll.abs())
    dz = err_sum + 2.0**-8 * (z.abs() + err_sum)  # the sum's error, then rounding to bfloat16
    a64, x64, q64 = a.double().view(-1, 1, 1), x.double(), lq.double()
    exact = x64 + torch.sigmoid(z - a64) * q64
    tol = 0.25 * q64.abs() * (dz + 2 * U32 * (z.abs() + a64)) + 8 * U32 * (x64.abs() + q64.abs()) + U32 * exact.abs()
    for use_kernel in (True, False):
        got = pid.ops.sigma_gate(x, lq, lq_logit, w_x, a, logit_dtype=torch.bfloat16, use_kernel=use_kernel)
        assert got.dtype == torch.float32
        err = (got.double() - exact).abs()
        assert (err <= tol).all(), f"use_kernel={use_kernel}: max error / tolerance {(err / tol).max().item():.3g}"
    # ... which a float32 logit (the op, float32 math) misses: the bfloat16 rounding is not inside float32's bound.
    assert not torch.equal(got, torch.ops.pid.sigma_gate(x, lq, lq_logit, w_x, a))


@needs_ext
def test_face_mixed_per_dim_bf16_logit():
    mixed_per_dim_bf16_logit("cpu")


@needs_ext
def test_face_bf16_logit_compiles():
    def gate(*args):
        return pid.ops.sigma_gate(*args, logit_dtype=torch.bfloat16)

    args = make_inputs(2, 7, 16, True, MIXED)
    compiled = torch.compile(gate, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), gate(*args), rtol=0, atol=0)


@needs_ext
def test_face_per_dim_compiles():
    # The per-channel route (GEMM + pid::sigma_gate_apply) in one graph; the contract compiles the fused op's route.
    args = make_inputs(2, 7, 16, True, torch.float32)
    compiled = torch.compile(pid.ops.sigma_gate, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), pid.ops.sigma_gate(*args), rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_face_without_kernel_is_the_reference(per_dim, dtype):
    args = make_inputs(2, 9, 24, per_dim, dtype, seed=4)
    for logit_dtype in (torch.float32, torch.bfloat16):
        got = pid.ops.sigma_gate(*args, logit_dtype=logit_dtype, use_kernel=False)
        assert torch.equal(got, reference.sigma_gate(*args, logit_dtype))
    with pytest.raises(ValueError, match="logit_dtype"):
        pid.ops.sigma_gate(*args, logit_dtype=torch.float16)


@needs_ext
def test_face_uses_reference_for_float16():
    args = make_inputs(1, 4, 8, False, torch.float32)
    half = [t.half() for t in args[:4]]
    torch.testing.assert_close(pid.ops.sigma_gate(*half, args[4]), reference.sigma_gate(*half, args[4]))


def _bad_inputs():
    x, lq, ll, w, a = make_inputs(2, 3, 5, True, torch.float32)
    _, _, ll1, w1, _ = make_inputs(2, 3, 5, False, torch.float32)
    nc = torch.randn(3, 2, 5).transpose(0, 1)
    return [
        ("x must have shape \\[B, L, D\\]", (x[0], lq, ll, w, a)),
        ("x must be float32 or bfloat16", (x.half(), lq.half(), ll.half(), w.half(), a)),
        ("lq_logit must have lq's dtype", (x, lq.bfloat16(), ll, w, a)),
        ("w_x must have lq's dtype", (x, lq.bfloat16(), ll.bfloat16(), w, a)),
        ("lq must have x's dtype", (x.bfloat16(), lq, ll, w, a)),
        ("lq must have x's shape", (x, lq[:, :2], ll, w, a)),
        ("lq_logit must have shape", (x, lq, ll[..., :3], w, a)),
        ("w_x must have shape", (x, lq, ll1, w, a)),
        ("w_x must have shape", (x, lq, ll, w1, a)),
        ("alpha_sigma must have shape", (x, lq, ll, w, a[:1])),
        ("alpha_sigma must be float32", (x, lq, ll, w, a.double())),
        ("x must be contiguous", (nc, lq, ll, w, a)),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pid.sigma_gate(*args)


# ---- CUDA: skipped without a GPU (run on a lent GPU by benchmarks/device/run.sh) ------------------


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(shapes)
def test_cuda_kernel_matches_exact(case):
    *shape, dtype, seed = case
    args = make_inputs(*shape, dtype, seed, device="cuda")
    assert_close_to_exact(torch.ops.pid.sigma_gate(*args), args)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LARGE + [(2, 4096, 1536, False), (1, 2048, 1536, True)])
def test_cuda_kernel_large(shape, dtype):
    args = make_inputs(*shape, dtype, device="cuda")
    assert_close_to_exact(torch.ops.pid.sigma_gate(*args), args)


@needs_cuda
def test_cuda_compiles_without_graph_break():
    args = make_inputs(2, 7, 16, True, torch.bfloat16, device="cuda")
    compiled = torch.compile(pid.ops.sigma_gate, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), torch.ops.pid.sigma_gate(*args), rtol=0, atol=0)


# ---- pid::sigma_gate_apply (the epilogue) and the face's GEMM path for G = D ---------------------------
# Tolerance of the epilogue on a given (already rounded) logit z, by the argument above with the dot product
# gone: fl(z - alpha_sigma) is off by gamma(2)·(|z| + |alpha_sigma|) at most, sigmoid' <= 1/4 carries that to
# the output times |lq|; sigmoid, product and sum add 8 u32·(|x| + |lq|); the output dtype rounds once more.


def apply_exact_and_tolerance(x, lq, logit, alpha_sigma):
    x64, q64, z64 = x.double(), lq.double(), logit.double()
    a64 = alpha_sigma.double().view(-1, 1, 1)
    exact = x64 + torch.sigmoid(z64 - a64) * q64
    gamma = 2 * U32 / (1 - 2 * U32)
    e32 = 0.25 * q64.abs() * gamma * (z64.abs() + a64.abs()) + 8 * U32 * (x64.abs() + q64.abs())
    u = UNIT_ROUNDOFF[x.dtype]
    return exact, u * exact.abs() + (1 + u) * e32


def assert_apply_close_to_exact(got, args):
    x = args[0]
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    exact, tol = apply_exact_and_tolerance(*args)
    err = (got.double() - exact).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(f"{int(bad.sum())} of {got.numel()} elements outside the tolerance; first at {i}: "
                             f"got {got[i].item()!r}, exact {exact[i].item()!r}, tolerance {tol[i].item():.3g}")


apply_cases = st.tuples(
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 80) | st.sampled_from([127, 129, 200]), st.booleans(),
    st.sampled_from(DTYPES), st.booleans(), st.integers(0, 2**31 - 1),
)


@needs_ext
@settings(max_examples=80, deadline=None)
@given(apply_cases)
def test_apply_cpu_kernel_matches_exact(case):
    *shape, per_dim, dtype, logit_f32, seed = case
    args = make_apply_inputs(*shape, per_dim, dtype, logit_f32 or dtype == torch.float32, seed)
    got = torch.ops.pid.sigma_gate_apply(*args)
    assert_apply_close_to_exact(got, args)
    assert_apply_close_to_exact(reference.sigma_gate_apply(*args), args)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_dim", [False, True])
def test_apply_large(per_dim, dtype):
    args = make_apply_inputs(2, 300, 1536, per_dim, dtype, True)
    assert_apply_close_to_exact(torch.ops.pid.sigma_gate_apply(*args), args)


@needs_ext
@settings(max_examples=60, deadline=None)
@given(shapes)
def test_face_matches_exact(case):
    # The face: fused kernel for G = 1, BLAS addmm + sigma_gate_apply for G = D; same bound as the fused op.
    *shape, dtype, seed = case
    args = make_inputs(*shape, dtype, seed)
    assert_close_to_exact(pid.ops.sigma_gate(*args), args)


@needs_ext
@pytest.mark.parametrize("per_dim,expected", [(False, ["pid.sigma_gate.default"]),
                                              (True, ["aten.addmm.default", "pid.sigma_gate_apply.default"])])
@pytest.mark.parametrize("dtype,logit_dtype", [(torch.float32, torch.float32), (MIXED, torch.float32),
                                               (MIXED, torch.bfloat16)])
def test_face_dispatch(per_dim, expected, dtype, logit_dtype):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops.append((str(func), out.dtype))
            return out

    args = make_inputs(2, 9, 24, per_dim, dtype)
    # The per-channel GEMM runs in logit_dtype (bfloat16: the fast path, as the official Linear); autocast has no say.
    with Record() as rec, torch.autocast("cpu", dtype=torch.bfloat16):
        pid.ops.sigma_gate(*args, logit_dtype=logit_dtype)
    assert [op for op, _ in rec.ops if op.startswith("pid.") or "mm" in op] == expected
    gemm_dtypes = [t for op, t in rec.ops if "mm" in op]
    assert gemm_dtypes == ([logit_dtype] if per_dim else [])


@needs_ext
def test_face_per_dim_ignores_autocast():
    args = make_inputs(2, 9, 24, True, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pid.ops.sigma_gate(*args)
    assert_close_to_exact(got, args)


@needs_ext
def test_apply_face_contiguity_and_fallback_dtypes():
    x, lq, logit, a = make_apply_inputs(2, 9, 24, True, torch.bfloat16, True)
    lt = logit.transpose(0, 1).contiguous().transpose(0, 1)
    assert torch.equal(pid.ops.sigma_gate_apply(x, lq, lt, a), torch.ops.pid.sigma_gate_apply(x, lq, logit, a))
    half = (x.half(), lq.half(), logit.half(), a)
    assert torch.equal(pid.ops.sigma_gate_apply(*half), reference.sigma_gate_apply(*half))


def _bad_apply_inputs():
    x, lq, z, a = make_apply_inputs(2, 3, 5, True, torch.float32, True)
    xb, lqb, zb, _ = make_apply_inputs(2, 3, 5, True, torch.bfloat16, False)
    return [
        ("x must have shape \\[B, L, D\\]", (x[0], lq, z, a)),
        ("x must be float32 or bfloat16", (x.half(), lq.half(), z, a)),
        ("lq must have x's shape", (x, lq[:, :2], z, a)),
        ("lq must have x's dtype", (xb, lq, z, a)),
        ("logit must have shape", (x, lq, z[..., :3], a)),
        ("logit must be float32 or have lq's dtype", (x, lq, zb, a)),
        ("logit must be float32 or have lq's dtype", (xb, lqb, z.double(), a)),
        ("logit must be float32 or have lq's dtype", (x, lqb, z.double(), a)),
        ("alpha_sigma must have shape", (x, lq, z, a[:1])),
        ("alpha_sigma must be float32", (x, lq, z, a.double())),
        ("logit must be contiguous", (x, lq, z.transpose(0, 1).contiguous().transpose(0, 1), a)),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_apply_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_apply_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=f"pid::sigma_gate_apply: {match}"):
        torch.ops.pid.sigma_gate_apply(*args)


@needs_cuda
@settings(max_examples=60, deadline=None)
@given(apply_cases)
def test_apply_cuda_kernel_matches_exact(case):
    *shape, per_dim, dtype, logit_f32, seed = case
    args = make_apply_inputs(*shape, per_dim, dtype, logit_f32 or dtype == torch.float32, seed, device="cuda")
    assert_apply_close_to_exact(torch.ops.pid.sigma_gate_apply(*args), args)


@needs_cuda
@settings(max_examples=40, deadline=None)
@given(shapes)
def test_cuda_face_matches_exact(case):
    *shape, dtype, seed = case
    args = make_inputs(*shape, dtype, seed, device="cuda")
    assert_close_to_exact(pid.ops.sigma_gate(*args), args)


@needs_cuda
def test_cuda_face_mixed_per_dim_bf16_logit(monkeypatch):
    # cuBLAS may otherwise reduce split-K partial sums in bfloat16, outside the float32 sum's bound.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction", False)
    mixed_per_dim_bf16_logit("cuda")


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_face_per_dim_large(dtype):
    args = make_inputs(1, 2048, 1536, True, dtype, device="cuda")
    assert_close_to_exact(pid.ops.sigma_gate(*args), args)
