"""Samplers: golden parity step by step, float64 re-derivations, step-count rules and edge cases."""

import math

import pytest
import torch

from pid import golden
from pid.nn import PidNet
from pid.sampling import (SamplerSettings, dynamic_shift, flow_timesteps, sample, sample_dpmpp_2m, sample_student,
                          student_schedule)

from conftest import SHARED

GOLDEN = golden.find_golden_dir(SHARED / "golden")
needs_golden = pytest.mark.skipif(GOLDEN is None, reason="no golden folder")
NET_REL_L2 = 1e-5  # the network goldens' bound (tests/test_golden_net.py), float32


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net_for(case):
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(golden.GoldenCase(case.meta["weights_file"].split(".")[0], case.folder).weights())
    return net


def _velocity(net, y, io, calls=None):
    p = net.config.patch_size
    H, W = io["noise"].shape[-2:]
    cond = net.encode_condition(io["lq_latent"], io["degrade_sigma"], (H // p, W // p))
    text = net.encode_text(y)

    def fn(x, t, step):
        if calls is not None:
            calls.append(t * 1000)
        with torch.no_grad():
            return net.velocity(x, t * 1000, text, cond)
    return fn


def _assert_steps(states, io, meta):
    tol = meta["tolerance"]["float32"]
    scale = meta["output_max_abs"]
    for k, state in enumerate(states):
        e = golden.errors(state, io[f"x_step_{k}"], scale)
        assert e["max_abs_rel"] <= tol["max_abs_rel"] and e["mean_abs_rel"] <= tol["mean_abs_rel"], (k, e)
    e = golden.errors(states[-1], io["x_final"], scale)
    assert e["max_abs_rel"] <= tol["max_abs_rel"] and e["mean_abs_rel"] <= tol["mean_abs_rel"], e


@needs_golden
def test_student_golden_with_injected_noise():
    case = golden.GoldenCase("v15_student", GOLDEN)
    io, meta = case.io, case.meta
    net = _net_for(case)
    n = len(meta["t_list_used"]) - 1
    calls, states = [], []
    out = sample_student(_velocity(net, io["y"], io, calls), io["noise"],
                         step_noises=[io[f"eps_{k}"] for k in range(1, n)],
                         callback=lambda k, total, x: states.append(x))
    assert torch.equal(student_schedule(), io["t_list"])
    for k, t_in in enumerate(calls):
        assert torch.equal(t_in, io[f"t_in_step_{k}"])
    _assert_steps(states, io, meta)
    assert golden.errors(out, io["x_final"], meta["output_max_abs"])["rel_l2"] <= 1e-5


@needs_golden
def test_student_generator_continues_the_initial_noise_stream():
    """Seed-compatibility: the reference draws the initial noise, then one tensor per re-noise, from one
    generator. Ours, given that generator after the initial draw, draws the same eps tensors."""
    case = golden.GoldenCase("v15_student", GOLDEN)
    io = case.io
    gen = torch.Generator("cpu").manual_seed(case.meta["seed"])
    noise = torch.randn(io["noise"].shape, generator=gen)
    assert torch.equal(noise, io["noise"])
    drawn = []
    real_randn = torch.randn

    def spy(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        drawn.append(out)
        return out

    torch.randn = spy
    try:
        sample_student(lambda x, t, step: torch.zeros_like(x), noise, generator=gen)
    finally:
        torch.randn = real_randn
    assert len(drawn) == 3
    for k, eps in enumerate(drawn, start=1):
        assert torch.equal(eps, io[f"eps_{k}"])


@needs_golden
def test_teacher_dpm_golden_with_cfg():
    case = golden.GoldenCase("v1_teacher_dpm", GOLDEN)
    io, meta = case.io, case.meta
    net = _net_for(case)
    v_uncond, v_cond = _velocity(net, io["y_null"], io), _velocity(net, io["y"], io)
    s = meta["cfg_scale"]
    first = {}

    def guided(x, t, step):
        vu = v_uncond(x, t, step)  # unconditional pass first
        vc = v_cond(x, t, step)
        first.setdefault("u", vu)
        first.setdefault("c", vc)
        return vu + s * (vc - vu)

    states = []
    out = sample_dpmpp_2m(guided, io["noise"], steps=meta["num_steps"], shift=meta["flow_shift"],
                          callback=lambda k, n, x: states.append(x))
    assert torch.equal(flow_timesteps(meta["num_steps"], meta["flow_shift"]), io["timesteps"])
    # The first two velocities are network forwards, unconditional first: held to the network goldens' bound.
    # (Not max|diff| <= 1e-5·max|v|: the reference's own float32 v_uncond_0 is 1.0e-5·max|v| from the same
    # network in float64, so that bound only held on CPUs whose BLAS happened to round like the reference run's.)
    for name, v in (("v_uncond_0", first["u"]), ("v_cond_0", first["c"])):
        e = golden.errors(v, io[name], meta["max_abs"][name])
        assert e["rel_l2"] <= NET_REL_L2 and e["max_abs_rel"] <= meta["tolerance"]["float32"]["max_abs_rel"], (name, e)
    _assert_steps(states, io, meta)
    assert torch.equal(out, states[-1])


# --------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("steps,expected", [
    (1, [1.0, 0.0]), (2, [0.999, 0.634, 0.0]), (3, [0.999, 0.866, 0.342, 0.0]),
    (4, [0.999, 0.866, 0.634, 0.342, 0.0]), (5, [0.999, 0.866, 0.634, 0.634, 0.342, 0.0]),
    (6, [0.999, 0.866, 0.866, 0.634, 0.342, 0.342, 0.0]),
    (7, [0.999, 0.866, 0.866, 0.634, 0.634, 0.342, 0.342, 0.0]),
    (8, [0.999, 0.999, 0.866, 0.634, 0.634, 0.634, 0.342, 0.0, 0.0])])
def test_student_schedule_table(steps, expected):
    """The reference's step-count rule: round-half-even indices into the 5-entry list; steps > 4 duplicate times."""
    assert student_schedule(steps).tolist() == pytest.approx(expected, abs=1e-7)


def test_flow_timesteps_spec_example():
    t = flow_timesteps(4, 6.0)
    assert t.tolist() == pytest.approx([0.99983, 0.94717, 0.85690, 0.66637, 0.0], abs=1e-5)
    assert t[-1].item() == 0.0


def test_dynamic_shift():
    assert dynamic_shift(2048, 2048) == pytest.approx(6.0)
    assert dynamic_shift(4096, 4096) == pytest.approx(8.485, abs=1e-3)


# ----------------------------------------------------------------------------- float64 re-derivations
def _linear_velocity(a: float, b: float):
    """v(x, t) = a·x + b·t, simple enough to re-derive every step in float64."""
    return lambda x, t, step: a * x + b * t.view(-1, 1, 1, 1).to(x.dtype)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("batch", [1, 3])
def test_student_matches_float64_derivation(steps, batch):
    gen = torch.Generator().manual_seed(steps)
    noise = torch.randn(batch, 3, 8, 16, generator=gen)
    grid = student_schedule(steps)
    n_draws = sum(1 for t in grid[1:] if t > 0)
    eps = [torch.randn(batch, 3, 8, 16, generator=gen) for _ in range(n_draws)]
    fn = _linear_velocity(0.3, -0.2)
    out = sample_student(fn, noise, steps=steps, step_noises=eps)
    x, d = noise.double(), 0
    ts = [float(t) for t in grid]
    for k in range(len(ts) - 1):
        v = 0.3 * x + (-0.2) * ts[k]
        x0 = x - ts[k] * v
        if ts[k + 1] > 0:
            x = (1 - ts[k + 1]) * x0 + ts[k + 1] * eps[d].double()
            d += 1
        else:
            x = x0
    torch.testing.assert_close(out.double(), x, rtol=1e-5, atol=1e-5)


def test_student_ode_mode():
    noise = torch.randn(2, 3, 4, 4)
    out = sample_student(_linear_velocity(0.1, 0.5), noise, mode="ode")
    x = noise.double()
    ts = [float(t) for t in student_schedule()]
    for k in range(4):
        v = 0.1 * x + 0.5 * ts[k]
        x = x + (ts[k + 1] - ts[k]) * v if ts[k + 1] > 0 else x - ts[k] * v
    torch.testing.assert_close(out.double(), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 25])
def test_dpmpp_2m_matches_float64_derivation(steps):
    """Re-derive DPM-Solver++(2M) with lower-order first/final steps in float64 from the solver's
    published update rule."""
    noise = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    fn = _linear_velocity(-0.4, 0.7)
    out = sample_dpmpp_2m(fn, noise, steps=steps, shift=6.0)
    ts = [float(t) for t in flow_timesteps(steps, 6.0)]
    lam = lambda t: math.log(1 - t) - math.log(t) if t > 0 else math.inf
    x = noise.double()
    D = lambda x, t: x - t * (-0.4 * x + 0.7 * t)
    ds = [D(x, ts[0])]
    for i in range(1, steps + 1):
        t, s = ts[i], ts[i - 1]
        if t == 0:
            x = ds[-1]
        else:
            h = lam(t) - lam(s)
            x = (t / s) * x - (1 - t) * math.expm1(-h) * ds[-1]
            if i not in (1, steps):
                r = (lam(s) - lam(ts[i - 2])) / h
                x = x - 0.5 * (1 - t) * math.expm1(-h) * (ds[-1] - ds[-2]) / r
        if i < steps:
            ds.append(D(x, t))
    assert torch.isfinite(out).all()
    # x̂0 = (x − t·ε̂)/(1 − t) is kept in the reference's float32 operation order: the rounding of x − t·ε̂
    # (a few float32 ulps of |x|) is amplified by 1/(1 − t0) ≈ 6000 at the first evaluation.
    amplified_rounding = 8 * 2.0**-24 * noise.abs().max().item() / (1 - ts[0])
    torch.testing.assert_close(out.double(), x, rtol=1e-5, atol=amplified_rounding)


def test_student_argument_errors():
    noise = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="step_noises must hold 3"):
        sample_student(lambda x, t, step: x, noise, step_noises=[noise])
    with pytest.raises(ValueError, match="mode"):
        sample_student(lambda x, t, step: x, noise, mode="heun")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        student_schedule(0)
    with pytest.raises(ValueError, match="shape"):
        sample_student(lambda x, t, step: x, noise, step_noises=[torch.zeros(1, 3, 2, 2)] * 3)


@pytest.mark.parametrize("settings", [SamplerSettings("student", 4), SamplerSettings("student", 6),
                                      SamplerSettings("student", 1), SamplerSettings("dpm++2m", 5, 3.0, 4.0),
                                      SamplerSettings("dpm++2m", 1, 1.0, 6.0)], ids=str)
def test_the_sampler_names_each_step(settings):
    """velocity_fn(x, t, step): every call names its step, in order, each guidance pass with its step's; the step's
    time is SamplerSettings.times()[step], the t passed (what a caller looks work up by, with no read-back of t);
    the re-noising draws are SamplerSettings.noise_draws()."""
    times, calls = settings.times(), []

    def velocity(kind):
        def fn(x, t, step):
            calls.append((kind, step, t[0].item()))
            return 0.1 * x
        return fn
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    draws = [torch.randn_like(noise) for _ in range(settings.noise_draws())]
    sample(settings, velocity("c"), noise, uncond_velocity_fn=velocity("u"), step_noises=draws)
    passes = ("u", "c") if settings.guided else ("c",)
    assert calls == [(kind, k, t) for k, t in enumerate(times) for kind in passes]
    expected_draws = sum(1 for t in student_schedule(settings.steps)[1:] if t > 0) if settings.name == "student" else 0
    assert settings.noise_draws() == expected_draws
