"""Sampler step kernels (pid::student_step, pid::dpm_step, pid::dpm_data_prediction): bit-equality with
pid.ops.reference and with the PyTorch arithmetic sampling.py used before the kernels, a float64 evaluation
with derived error bounds, the samplers with and without the extension, input errors, CUDA. The contract every op
meets (registration, fake kernels, opcheck, torch.compile, the fallback, one device, autograd) is
tests/test_ops_contract.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pid.ops
from pid import sampling
from pid.ops import reference
from conftest import run_without_extension, needs_ext, needs_cuda
from op_inputs import make_sampler_tensors as make_tensors


# ---- error bounds against a float64 evaluation ----------------------------------------------------------
# Every step is float32 arithmetic (the student's x0 is a float64 difference rounded once to float32), so the
# bounds use u = 2^-24, the unit roundoff of float32, whatever the velocity's dtype: a bfloat16 v enters as
# its exact value, and the float64 evaluation starts from the same value. The bound is propagated operation
# by operation (running error analysis): a computed c = fl(a ∘ b) from inputs known to ±ea, ±eb differs from
# the exact a ∘ b by at most the propagated input error plus u·|c|. The float64 evaluation's own rounding
# (2^-53 relative per operation, 2^29 times smaller) is covered by a relative slack of 2^-20 on the bound.
U32 = 2.0**-24
SLACK = 1 + 2.0**-20


class Bounded:
    """A float64 value (tensor or float) with a bound on the error of its float32 computation."""

    def __init__(self, val, err=0.0):
        self.val, self.err = val, err

    @staticmethod
    def _abs(v):
        return v.abs() if isinstance(v, torch.Tensor) else abs(v)

    def _round(self, val, prop):  # one float32 rounding of a result whose inputs were off by `prop`
        return Bounded(val, prop + U32 * (self._abs(val) + prop))

    def __add__(self, o):
        return self._round(self.val + o.val, self.err + o.err)

    def __sub__(self, o):
        return self._round(self.val - o.val, self.err + o.err)

    def __mul__(self, o):
        a, b = self._abs(self.val), self._abs(o.val)
        return self._round(self.val * o.val, a * o.err + b * self.err + self.err * o.err)

    def __truediv__(self, o):
        b = self._abs(o.val)
        q = self.val / o.val
        return self._round(q, (self.err + self._abs(q) * o.err) / (b - o.err))


def exact(value) -> Bounded:
    return Bounded(value.double() if isinstance(value, torch.Tensor) else float(value))


def f32(value: float) -> float:
    """The float32 value the kernels use for a Python float argument."""
    return torch.tensor(value, dtype=torch.float32).item()


def student_exact(x, v, eps, t, t_next) -> Bounded:
    t, t_next = f32(t), f32(t_next)
    d = x.double() - t * v.double()  # t·v is exact in float64 (24 + 24 bits); one float64 rounding
    x0 = Bounded(d, U32 * d.abs())  # rounded to float32
    if eps is None:
        return x0
    return (exact(1.0) - exact(t_next)) * x0 + exact(t_next) * exact(eps)


def dpm_exact(x, v_c, v_u, d_prev, s, t, t_ratio=0.0, alpha_phi=0.0, half_alpha_phi=0.0, inv_r=0.0, update=True):
    t, s = f32(t), f32(s)
    xb = exact(x)
    v = exact(v_c) if v_u is None else exact(v_u) + exact(s) * (exact(v_c) - exact(v_u))
    one_minus_t = exact(1.0) - exact(t)
    e = one_minus_t * v + xb
    d = (xb - exact(t) * e) / one_minus_t
    if not update:
        return d, None
    x_next = exact(f32(t_ratio)) * xb - exact(f32(alpha_phi)) * d
    if d_prev is not None:
        x_next = x_next - exact(f32(half_alpha_phi)) * (exact(f32(inv_r)) * (d - exact(d_prev)))
    return d, x_next


def assert_within(got: torch.Tensor, want: Bounded, what: str = ""):
    assert got.dtype == torch.float32
    err = (got.double() - want.val).abs()
    tol = want.err * SLACK
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {got.numel()} elements outside the bound; first at {i}: got "
            f"{got[i].item()!r}, float64 {want.val[i].item()!r}, bound {tol[i].item():.3g}"
        )


def assert_bit_equal(got: torch.Tensor, want: torch.Tensor, what: str = ""):
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    if not torch.equal(got, want):
        diff = got != want
        i = tuple(diff.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(diff.sum())} of {got.numel()} elements differ; first at {i}: "
                             f"got {got[i].item()!r}, want {want[i].item()!r}")


# ---- inputs ----------------------------------------------------------------------------------------------
STUDENT_TIMES = [(0.999, 0.866), (0.866, 0.634), (0.634, 0.342), (0.342, 0.0), (1.0, 0.0), (0.634, 0.634)]
DPM_TIMES = [float(t) for t in sampling.flow_timesteps(6, 6.0)[:-1]] + [0.5, 0.01, 0.0]


def dpm_coeffs(i: int, steps: int = 6, shift: float = 6.0):
    """The host scalars of step i of sample_dpmpp_2m, computed as sampling.py computes them."""
    grid = sampling.flow_timesteps(steps, shift)
    lam = sampling._lambda
    t_prev, t = grid[i - 1], grid[i]
    h = lam(t) - lam(t_prev)
    alpha_phi = torch.exp(torch.log(1 - t)) * torch.expm1(-h)
    out = dict(t=t_prev.item(), t_ratio=(t / t_prev).item(), alpha_phi=alpha_phi.item())
    if i >= 2:
        r = (lam(t_prev) - lam(grid[i - 2])) / h
        out.update(half_alpha_phi=(0.5 * alpha_phi).item(), inv_r=(1.0 / r).item())
    return out


shapes = st.one_of(
    st.tuples(st.integers(1, 3), st.just(3), st.integers(1, 40), st.integers(1, 40)),  # [B, 3, H, W], odd sizes
    st.tuples(st.integers(0, 4), st.integers(1, 5), st.integers(0, 9)),  # any shape, empty ones included
    st.tuples(st.sampled_from([1, 2, 3, 4, 5, 7, 31, 1025, 40_000])),  # vector tails, OpenMP threshold
)
v_dtypes = st.sampled_from([torch.float32, torch.bfloat16])
seeds = st.integers(0, 2**31 - 1)


# ---- student ---------------------------------------------------------------------------------------------
def check_student(shape, v_dtype, seed, times, device="cpu"):
    (x, eps, _), (v, _) = make_tensors(shape, v_dtype, seed, device)
    t, t_next = times
    for e in (eps, None) if t_next > 0 else (None,):
        x0_out = torch.empty_like(x)
        got = torch.ops.pid.student_step(x, v, e, t, t_next, x0_out)
        want, want_x0 = reference.student_step(x, v, e, t, t_next)
        assert_bit_equal(got, want, f"student x_next {shape} {v_dtype} t={times} eps={e is not None}")
        assert_bit_equal(x0_out, want_x0, "student x0_out")
        assert_within(got.cpu(), student_exact(x.cpu(), v.cpu(), None if e is None else e.cpu(), t, t_next),
                      "student vs float64")


@needs_ext
@settings(max_examples=60, deadline=None)
@given(shapes, v_dtypes, seeds, st.sampled_from(STUDENT_TIMES))
def test_student_step_matches_reference_and_float64(shape, v_dtype, seed, times):
    check_student(shape, v_dtype, seed, times)


@needs_ext
@pytest.mark.parametrize("v_dtype", [torch.float32, torch.bfloat16])
def test_student_step_large(v_dtype):
    check_student((2, 3, 130, 97), v_dtype, 1, (0.866, 0.634))


def test_student_reference_matches_float64():
    # The reference is held to the same bound, so the bound is not tuned to the kernel.
    (x, eps, _), (v, _) = make_tensors((2, 3, 17, 9), torch.float32, 5)
    assert_within(reference.student_step(x, v, eps, 0.999, 0.866)[0], student_exact(x, v, eps, 0.999, 0.866))


# ---- DPM-Solver++(2M) ------------------------------------------------------------------------------------
def check_dpm(shape, v_dtype, seed, step, guided, device="cpu"):
    (x, d_prev, _), (v_c, v_u) = make_tensors(shape, v_dtype, seed, device)
    v_u = v_u if guided else None
    s = 3.5 if guided else 1.0
    k = dpm_coeffs(step)
    dp = d_prev if "inv_r" in k else None
    x_next, d = torch.ops.pid.dpm_step(x, v_c, v_u, dp, s, k["t"], k["t_ratio"], k["alpha_phi"],
                                       k.get("half_alpha_phi", 0.0), k.get("inv_r", 0.0))
    want_x, want_d = reference.dpm_step(x, v_c, v_u, dp, s, k["t"], k["t_ratio"], k["alpha_phi"],
                                        k.get("half_alpha_phi", 0.0), k.get("inv_r", 0.0))
    what = f"dpm_step {shape} {v_dtype} step {step} guided={guided}"
    assert_bit_equal(d, want_d, what + " D")
    assert_bit_equal(x_next, want_x, what + " x_next")
    cpu = lambda z: None if z is None else z.cpu()  # noqa: E731
    bd, bx = dpm_exact(x.cpu(), v_c.cpu(), cpu(v_u), cpu(dp), s, **k)
    assert_within(d.cpu(), bd, what + " D vs float64")
    assert_within(x_next.cpu(), bx, what + " x_next vs float64")
    # The final step's data prediction alone (x_next = D at t = 0).
    t = k["t"]
    got = torch.ops.pid.dpm_data_prediction(x, v_c, v_u, s, t)
    assert_bit_equal(got, reference.dpm_data_prediction(x, v_c, v_u, s, t), what + " data prediction")


@needs_ext
@settings(max_examples=60, deadline=None)
@given(shapes, v_dtypes, seeds, st.integers(1, 5), st.booleans())
def test_dpm_step_matches_reference_and_float64(shape, v_dtype, seed, step, guided):
    check_dpm(shape, v_dtype, seed, step, guided)


@needs_ext
@pytest.mark.parametrize("v_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("guided", [False, True])
def test_dpm_step_large(v_dtype, guided):
    check_dpm((2, 3, 130, 97), v_dtype, 2, 3, guided)


@needs_ext
@settings(max_examples=30, deadline=None)
@given(shapes, v_dtypes, seeds, st.sampled_from(DPM_TIMES), st.booleans())
def test_dpm_data_prediction_any_time(shape, v_dtype, seed, t, guided):
    (x, _, _), (v_c, v_u) = make_tensors(shape, v_dtype, seed)
    v_u = v_u if guided else None
    got = torch.ops.pid.dpm_data_prediction(x, v_c, v_u, 2.0, t)
    assert_bit_equal(got, reference.dpm_data_prediction(x, v_c, v_u, 2.0, t), "data prediction")
    assert_within(got, dpm_exact(x, v_c, v_u, None, 2.0, t, update=False)[0], "data prediction vs float64")


def test_dpm_reference_matches_float64():
    (x, d_prev, _), (v_c, v_u) = make_tensors((2, 3, 17, 9), torch.float32, 6)
    k = dpm_coeffs(3)
    want_d, want_x = dpm_exact(x, v_c, v_u, d_prev, 3.5, **k)
    x_next, d = reference.dpm_step(x, v_c, v_u, d_prev, 3.5, k["t"], k["t_ratio"], k["alpha_phi"],
                                   k["half_alpha_phi"], k["inv_r"])
    assert_within(d, want_d)
    assert_within(x_next, want_x)


# ---- the samplers: bit-equal to the PyTorch arithmetic sampling.py used before the kernels ---------------
def legacy_sample_student(velocity_fn, noise, steps, step_noises):
    """sample_student (SDE, injected noise) as written before the fused kernels."""
    grid = sampling.student_schedule(steps).to(noise.device)
    B, x, draw = noise.shape[0], noise, 0
    for k in range(len(grid) - 1):
        t_cur, t_next = grid[k], grid[k + 1]
        t_batch = t_cur.expand(B)
        v = velocity_fn(x, t_batch)
        x0 = (x.double() - t_batch.view(B, 1, 1, 1).double() * v.double()).to(x.dtype)
        if t_next.item() <= 0:
            x = x0
        else:
            x = (1.0 - t_next) * x0 + t_next * step_noises[draw]
            draw += 1
    return x


def legacy_sample_dpmpp_2m(velocity_fn, noise, steps, shift):
    """sample_dpmpp_2m as written before the fused kernels (verbatim but for the callback)."""
    grid = sampling.flow_timesteps(steps, shift).to(noise.device)
    B, lam = noise.shape[0], sampling._lambda

    def data_prediction(x, t):
        v = velocity_fn(x, t.expand(B))
        eps = (1 - t) * v + x
        return (x - t * eps) / (1 - t)

    x = noise
    d_prev, d_cur = None, data_prediction(x, grid[0])
    for i in range(1, steps + 1):
        t_prev, t = grid[i - 1], grid[i]
        first_order = i == 1 or i == steps
        if t.item() == 0:
            x = d_cur
        else:
            h = lam(t) - lam(t_prev)
            alpha_phi = torch.exp(torch.log(1 - t)) * torch.expm1(-h)
            x = (t / t_prev) * x - alpha_phi * d_cur
            if not first_order:
                r = (lam(t_prev) - lam(grid[i - 2])) / h
                x = x - 0.5 * alpha_phi * ((1.0 / r) * (d_cur - d_prev))
        if i < steps:
            d_prev, d_cur = d_cur, data_prediction(x, t)
    return x


def velocity(a, b, dtype=torch.float32):
    """A cheap nonlinear stand-in for the network: v = tanh(a·x) + b·t, in `dtype`."""
    return lambda x, t, step=None: (torch.tanh(a * x) + b * t.view(-1, 1, 1, 1)).to(dtype)  # step: unused


@pytest.mark.parametrize("v_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("steps", [1, 2, 4, 5, 8])
def test_sample_student_bit_equal_to_legacy(steps, v_dtype):
    g = torch.Generator().manual_seed(steps)
    noise = torch.randn(2, 3, 19, 23, generator=g)
    n_draws = sum(1 for t in sampling.student_schedule(steps)[1:] if t > 0)
    eps = [torch.randn(2, 3, 19, 23, generator=g) for _ in range(n_draws)]
    fn = velocity(0.7, -0.3, v_dtype)
    assert_bit_equal(sampling.sample_student(fn, noise, steps=steps, step_noises=eps),
                     legacy_sample_student(fn, noise, steps, eps), "sample_student")


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 25])
def test_sample_dpmpp_2m_bit_equal_to_legacy(steps):
    noise = torch.randn(2, 3, 21, 17, generator=torch.Generator().manual_seed(steps))
    fn = velocity(-0.4, 0.7)
    assert_bit_equal(sampling.sample_dpmpp_2m(fn, noise, steps=steps, shift=6.0),
                     legacy_sample_dpmpp_2m(fn, noise, steps, 6.0), "sample_dpmpp_2m")


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sample_dpmpp_2m_fused_guidance_bit_equal_to_guided_velocity(steps):
    noise = torch.randn(2, 3, 9, 14, generator=torch.Generator().manual_seed(7))
    v_c, v_u, s = velocity(-0.4, 0.7), velocity(0.3, -0.2), 4.5
    calls = []

    def cond(x, t, step):
        calls.append("c")
        return v_c(x, t)

    def uncond(x, t, step):
        calls.append("u")
        return v_u(x, t)

    def guided(x, t):
        vu = v_u(x, t)
        return vu + s * (v_c(x, t) - vu)

    got = sampling.sample_dpmpp_2m(cond, noise, steps=steps, shift=3.0, uncond_velocity_fn=uncond, cfg_scale=s)
    assert calls == ["u", "c"] * steps  # the unconditional pass first, as the reference
    assert_bit_equal(got, legacy_sample_dpmpp_2m(guided, noise, steps, 3.0), "guided sample_dpmpp_2m")
    # cfg_scale 1 runs the conditional pass only
    calls.clear()
    sampling.sample_dpmpp_2m(cond, noise, steps=steps, shift=3.0, uncond_velocity_fn=uncond, cfg_scale=1.0)
    assert calls == ["c"] * steps


# ---- the python face ------------------------------------------------------------------------------------
@needs_ext
def test_face_contiguity_and_x0():
    (x, eps, _), (v, _) = make_tensors((2, 3, 12, 10), torch.float32, 3)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, not contiguous
    assert not xt.is_contiguous()
    x_next, x0 = pid.ops.student_step(xt, v, eps, 0.866, 0.634, return_x0=True)
    want_next, want_x0 = reference.student_step(x, v, eps, 0.866, 0.634)
    assert_bit_equal(x_next, want_next)
    assert_bit_equal(x0, want_x0)
    last, x0_last = pid.ops.student_step(x, v, None, 0.342, 0.0, return_x0=True)
    assert last is x0_last
    k = dpm_coeffs(2)
    got = pid.ops.dpm_step(xt, v, None, eps.transpose(2, 3).contiguous().transpose(2, 3), **k)
    want = reference.dpm_step(x, v, None, eps, 1.0, k["t"], k["t_ratio"], k["alpha_phi"], k["half_alpha_phi"],
                              k["inv_r"])
    assert_bit_equal(got[0], want[0])
    assert_bit_equal(got[1], want[1])


@needs_ext
def test_face_uses_reference_for_other_dtypes():
    (x, eps, _), (v, _) = make_tensors((1, 3, 4, 4), torch.float32, 4)
    x64, v16 = x.double(), v.half()
    assert_bit_equal(pid.ops.student_step(x64, v, eps.double(), 0.866, 0.634),
                     reference.student_step(x64, v, eps.double(), 0.866, 0.634)[0])
    k = dpm_coeffs(1)
    assert_bit_equal(pid.ops.dpm_step(x, v16, None, None, **k)[1],
                     reference.dpm_step(x, v16, None, None, 1.0, k["t"], k["t_ratio"], k["alpha_phi"], 0.0, 0.0)[1])


# ---- the fallback without the extension ------------------------------------------------------------------
def test_fallback_without_extension_equals_kernels(tmp_path):
    noise = torch.randn(2, 3, 13, 11, generator=torch.Generator().manual_seed(11))
    eps = [torch.randn(2, 3, 13, 11, generator=torch.Generator().manual_seed(12 + i)) for i in range(3)]
    fallback = run_without_extension(tmp_path, {"noise": noise, "eps": eps}, (
        "from pid import sampling\n"
        "d = inp\n"
        "fn = lambda a, b, dt: (lambda x, t, step: (torch.tanh(a * x) + b * t.view(-1, 1, 1, 1)).to(dt))\n"
        "out = [sampling.sample_student(fn(0.7, -0.3, dt), d['noise'], step_noises=d['eps']) "
        "for dt in (torch.float32, torch.bfloat16)]\n"
        "out.append(sampling.sample_dpmpp_2m(fn(-0.4, 0.7, torch.float32), d['noise'], steps=7, shift=6.0,\n"
        "           uncond_velocity_fn=fn(0.3, -0.2, torch.float32), cfg_scale=3.0))\n"
        "out.append(sampling.sample_dpmpp_2m(fn(-0.4, 0.7, torch.bfloat16), d['noise'], steps=5, shift=6.0))"))
    fn = lambda a, b, dt: velocity(a, b, dt)  # noqa: E731
    here = [sampling.sample_student(fn(0.7, -0.3, dt), noise, step_noises=eps) for dt in (torch.float32, torch.bfloat16)]
    here.append(sampling.sample_dpmpp_2m(fn(-0.4, 0.7, torch.float32), noise, steps=7, shift=6.0,
                                         uncond_velocity_fn=fn(0.3, -0.2, torch.float32), cfg_scale=3.0))
    here.append(sampling.sample_dpmpp_2m(fn(-0.4, 0.7, torch.bfloat16), noise, steps=5, shift=6.0))
    for i, (a, b) in enumerate(zip(fallback, here)):
        assert_bit_equal(b, a, f"case {i}: with the extension vs without")


# ---- input errors ----------------------------------------------------------------------------------------
def _bad_student():
    (x, eps, _), (v, _) = make_tensors((2, 3, 4, 5), torch.float32, 0)
    nc = torch.randn(2, 3, 5, 4).transpose(2, 3)
    return [
        ("x must be float32", (x.double(), v, eps, 0.5, 0.4, None)),
        ("x must be contiguous", (nc, v, eps, 0.5, 0.4, None)),
        ("v must have x's shape", (x, v[:1], eps, 0.5, 0.4, None)),
        ("v must be float32 or bfloat16", (x, v.half(), eps, 0.5, 0.4, None)),
        ("eps must be float32", (x, v, eps.bfloat16(), 0.5, 0.4, None)),
        ("eps must have x's shape", (x, v, eps[..., :2], 0.5, 0.4, None)),
        ("v must be contiguous", (x, nc, eps, 0.5, 0.4, None)),
        ("x0_out must have x's shape", (x, v, eps, 0.5, 0.4, torch.empty(3))),
        ("x0_out must be float32", (x, v, eps, 0.5, 0.4, torch.empty_like(x, dtype=torch.bfloat16))),
    ]


def _bad_dpm():
    (x, dp, _), (v, vu) = make_tensors((2, 3, 4, 5), torch.float32, 0)
    k = (0.9, 0.95, -0.04, -0.02, 1.3)
    return [
        ("x must be float32", (x.bfloat16(), v, None, None, 1.0, *k)),
        ("v_c must have x's shape", (x, v[0], None, None, 1.0, *k)),
        ("v_c must be float32 or bfloat16", (x, v.double(), None, None, 1.0, *k)),
        ("v_u must have v_c's dtype", (x, v, vu.bfloat16(), None, 2.0, *k)),
        ("v_u must have x's shape", (x, v, vu[:1], None, 2.0, *k)),
        ("d_prev must be float32", (x, v, None, dp.bfloat16(), 1.0, *k)),
        ("d_prev must be contiguous", (x, v, None, dp.transpose(2, 3).contiguous().transpose(2, 3), 1.0, *k)),
    ]


@needs_ext
@pytest.mark.parametrize("match,args", _bad_student(), ids=lambda v: v if isinstance(v, str) else "")
def test_student_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=f"pid::student_step: {match}"):
        torch.ops.pid.student_step(*args)


@needs_ext
@pytest.mark.parametrize("match,args", _bad_dpm(), ids=lambda v: v if isinstance(v, str) else "")
def test_dpm_bad_input_errors(match, args):
    with pytest.raises(RuntimeError, match=f"pid::dpm_step: {match}"):
        torch.ops.pid.dpm_step(*args)
    if args[3] is None:
        with pytest.raises(RuntimeError, match=f"pid::dpm_data_prediction: {match}"):
            torch.ops.pid.dpm_data_prediction(*args[:3], args[4], args[5])


# ---- CUDA: skipped without a GPU (run on a lent GPU by benchmarks/device/run.sh) --------------------------
@needs_cuda
@settings(max_examples=40, deadline=None)
@given(shapes, v_dtypes, seeds, st.sampled_from(STUDENT_TIMES))
def test_cuda_student_step(shape, v_dtype, seed, times):
    check_student(shape, v_dtype, seed, times, device="cuda")


@needs_cuda
@settings(max_examples=40, deadline=None)
@given(shapes, v_dtypes, seeds, st.integers(1, 5), st.booleans())
def test_cuda_dpm_step(shape, v_dtype, seed, step, guided):
    check_dpm(shape, v_dtype, seed, step, guided, device="cuda")


@needs_cuda
@pytest.mark.parametrize("v_dtype", [torch.float32, torch.bfloat16])
def test_cuda_large_and_unaligned(v_dtype):
    check_student((1, 3, 1024, 1031), v_dtype, 3, (0.999, 0.866), device="cuda")
    check_dpm((1, 3, 1024, 1031), v_dtype, 4, 2, True, device="cuda")
    # Views at an odd element offset: the kernels take their scalar (non-vector) path.
    (x, eps, d_prev), (v, v_u) = make_tensors((4099,), v_dtype, 5, device="cuda")
    x, eps, v = x[1:], eps[1:], v[1:]
    x0 = torch.empty(4099, device="cuda")[1:]
    got = torch.ops.pid.student_step(x, v, eps, 0.866, 0.634, x0)
    want, want_x0 = reference.student_step(x, v, eps, 0.866, 0.634)
    assert_bit_equal(got, want)
    assert_bit_equal(x0, want_x0)


@needs_cuda
@pytest.mark.parametrize("steps", [4, 25])
def test_cuda_samplers_bit_equal_to_cpu(steps):
    """The scalars are computed on the host and every operation is IEEE-rounded on both back ends, so a
    sampler run on the GPU reproduces the CPU run bit for bit (given a velocity computed identically)."""
    g = torch.Generator().manual_seed(steps)
    noise = torch.randn(2, 3, 33, 47, generator=g)
    eps = [torch.randn(2, 3, 33, 47, generator=g) for _ in range(3)]
    fn = lambda x, t, step: 0.5 * x + 0.25 * t.view(-1, 1, 1, 1)  # noqa: E731
    cpu = sampling.sample_student(fn, noise, step_noises=eps)
    gpu = sampling.sample_student(fn, noise.cuda(), step_noises=[e.cuda() for e in eps])
    assert_bit_equal(gpu.cpu(), cpu, "student cuda vs cpu")
    cpu = sampling.sample_dpmpp_2m(fn, noise, steps=steps, shift=6.0, uncond_velocity_fn=lambda x, t, step: -x, cfg_scale=2.0)
    gpu = sampling.sample_dpmpp_2m(fn, noise.cuda(), steps=steps, shift=6.0, uncond_velocity_fn=lambda x, t, step: -x,
                                   cfg_scale=2.0)
    assert_bit_equal(gpu.cpu(), cpu, "dpm cuda vs cpu")
