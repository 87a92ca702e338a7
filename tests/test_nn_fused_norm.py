"""The network's opt-in fused norm/modulate/gated-residual path (pid.nn.layers.fused_norm, PID_FUSED_NORM=1).

Stated tolerance of the fused path, float32 (the golden regime): the golden tests' own bounds, i.e.
rel_l2 <= 1e-5 and the case's max_abs_rel / mean_abs_rel (for the synthetic net below: the tightest golden
case's, max_abs_rel <= 6.32e-5, mean_abs_rel <= 3.11e-6). The fused ops round every step as the reference
does; they differ only in the order of RMSNorm's float32 sum of squares (measured: rel_l2 ~4e-7).

Under bfloat16 autocast there is no useful network-level bound: a sum-order difference of one float32 ulp
occasionally flips one bfloat16 rounding, and the small random-weight test nets amplify a single one-ulp
bfloat16 change anywhere to ~1% of the output (the reference itself moves that much). There the guarantee is
op-level (tests/test_ops_norm_modulate.py: bit-identical to the reference whenever the sum is exact,
within the derived bound otherwise), plus the check below that writing bfloat16 for a Linear under
autocast is what autocast itself would have done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import test_golden_net as tg
from pid import _extension, golden
from pid.config import PidConfig
from pid.nn import PidNet, layers

from conftest import needs_ext

REL_L2 = tg.REL_L2
SYNTHETIC_TOL = {"max_abs_rel": 6.32e-5, "mean_abs_rel": 3.11e-6}  # the tightest golden case's float32 bounds
# A small net with the released pixel width (c = 16: the kernels' unrolled path) and odd-ish sizes.
SYNTHETIC = dict(hidden_size=80, num_heads=4, pixel_hidden_size=16, pixel_attn_hidden_size=48, pixel_num_heads=4,
                 patch_depth=4, txt_embed_dim=24, txt_max_length=12, lq_hidden_dim=32, lq_num_res_blocks=1,
                 rope_ref_h=128, rope_ref_w=128)


@pytest.fixture(autouse=True)
def _single_thread_and_fused_off():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the golden tests: the reference run used one thread
    old = layers.set_fused_norm(False)
    yield
    layers.set_fused_norm(old)
    torch.set_num_threads(threads)


def test_off_by_default():
    if os.environ.get("PID_FUSED_NORM", "") not in ("", "0"):
        pytest.skip("PID_FUSED_NORM is set")
    code = "import pid.nn.layers as l; assert not l.fused_norm_enabled()"
    subprocess.run([sys.executable, "-c", code], check=True, env={k: v for k, v in os.environ.items() if k != "PID_FUSED_NORM"})


def test_switch():
    assert not layers.fused_norm_enabled()
    with layers.fused_norm():
        assert layers.fused_norm_enabled()
        with layers.fused_norm(False):
            assert not layers.fused_norm_enabled()
        assert layers.fused_norm_enabled()
    assert not layers.fused_norm_enabled()


# ---- the golden tests, with the kernels active, at the same tolerances ---------------------------------


@tg.needs_golden
@needs_ext
@pytest.mark.parametrize("name", tg.NET_CASES)
def test_golden_net_fused(name):
    with layers.fused_norm():
        tg.test_net_matches_reference_weights(name)
        tg.test_net_intermediates_match(name)
        tg.test_split_equals_forward(name)


@tg.needs_golden
@needs_ext
def test_golden_checkpoint_and_batch_fused():
    with layers.fused_norm():
        tg.test_checkpoint_container_loads_and_matches()
        tg.test_batch_rows_are_independent()


# ---- with the kernels vs PID_DISABLE_EXTENSION=1, each in its own process ----------------------------

_RUN = r"""
import json, sys, torch
import pid._extension as ext
from pid import golden
from pid.config import PidConfig
from pid.nn import PidNet, layers
assert layers.fused_norm_enabled(), "PID_FUSED_NORM=1 was not honoured"
torch.set_num_threads(1)
out = {}
torch.manual_seed(0)
net = PidNet(PidConfig(**json.loads(sys.argv[2]))).eval()
g = torch.Generator().manual_seed(1)
B, H, W = 2, 64, 96
x, t = torch.randn(B, 3, H, W, generator=g), torch.tensor([999.0, 634.0])
y, lat = torch.randn(B, 10, 24, generator=g), torch.randn(B, 16, H // 32, W // 32, generator=g)
with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    out["synthetic"] = net(x, t, y, lq_latent=lat, degrade_sigma=torch.tensor([0.0, 0.4]))
calls = sorted({e.name for e in prof.events() if e.name.startswith("pid::")})
folder = __import__("pathlib").Path(sys.argv[3]) if sys.argv[3] else None
if folder:
    for c in golden.list_cases(folder, "net_forward"):
        case = golden.GoldenCase(c.name, folder)
        n = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
        n.load_state_dict(case.weights())
        out[c.name] = golden.run_net_case(case, n)
torch.save(out, sys.argv[1])
print(json.dumps({"extension": ext.available(), "pid_ops_called": calls}))
"""


def _run(tmp_path, tag, disable):
    env = dict(os.environ, PID_FUSED_NORM="1")
    if disable:
        env["PID_DISABLE_EXTENSION"] = "1"
    else:
        env.pop("PID_DISABLE_EXTENSION", None)
    path = tmp_path / f"{tag}.pt"
    res = subprocess.run([sys.executable, "-c", _RUN, str(path), json.dumps(SYNTHETIC), str(tg.GOLDEN or "")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{tag} run failed:\n{res.stderr[-3000:]}"
    return torch.load(path), json.loads(res.stdout.strip().splitlines()[-1])


@needs_ext
def test_net_with_kernels_equals_fallback(tmp_path):
    fast, info_fast = _run(tmp_path, "kernels", disable=False)
    slow, info_slow = _run(tmp_path, "fallback", disable=True)
    assert info_fast["extension"] and not info_slow["extension"]
    assert {"pid::rms_norm_modulate", "pid::rms_norm_modulate_pixels", "pid::gated_residual"} <= set(
        info_fast["pid_ops_called"]), info_fast
    assert not info_slow["pid_ops_called"], info_slow
    assert fast.keys() == slow.keys()
    assert len(fast) == 1 + len(tg.NET_CASES)
    for name in fast:
        if name == "synthetic":
            tol, scale = SYNTHETIC_TOL, slow[name].abs().max().item()
        else:
            meta = tg._case(name).meta
            tol, scale = meta["tolerance"]["float32"], meta["output_max_abs"]
        e = golden.errors(fast[name], slow[name], scale)
        assert e["rel_l2"] <= REL_L2 and e["max_abs_rel"] <= tol["max_abs_rel"] and e["mean_abs_rel"] <= tol["mean_abs_rel"], (name, e)
        assert not torch.equal(fast[name], torch.zeros_like(fast[name]))


# ---- in process: same network, fused on vs off ---------------------------------------------------------


def _synthetic_net_and_inputs():
    torch.manual_seed(0)
    net = PidNet(PidConfig(**SYNTHETIC)).eval()
    g = torch.Generator().manual_seed(1)
    B, H, W = 2, 64, 96
    args = (torch.randn(B, 3, H, W, generator=g), torch.tensor([999.0, 634.0]), torch.randn(B, 10, 24, generator=g))
    kw = dict(lq_latent=torch.randn(B, 16, H // 32, W // 32, generator=g), degrade_sigma=torch.tensor([0.0, 0.4]))
    return net, args, kw


def test_fused_matches_default_in_process():
    # Without the extension (PID_DISABLE_EXTENSION=1) the fused path is the reference: bit-identical.
    net, args, kw = _synthetic_net_and_inputs()
    with torch.no_grad():
        ref = net(*args, **kw)
        with layers.fused_norm():
            fused = net(*args, **kw)
    if not _extension.available():
        assert torch.equal(fused, ref)
    e = golden.errors(fused, ref, ref.abs().max().item())
    assert e["rel_l2"] <= REL_L2 and e["max_abs_rel"] <= SYNTHETIC_TOL["max_abs_rel"], e


def test_autocast_bf16_output_is_what_autocast_feeds_the_linear():
    # Under bf16 autocast the fused ops write bfloat16 for the Linear that follows; autocast would have
    # rounded the float32 result the same way, so the Linear's output is bit-identical.
    lin = torch.nn.Linear(80, 48)
    x32 = torch.randn(2, 9, 80) * 3
    with torch.autocast("cpu", torch.bfloat16):
        assert layers._linear_input_dtype(x32) == torch.bfloat16
        assert torch.equal(lin(x32), lin(x32.to(torch.bfloat16)))
    assert layers._linear_input_dtype(x32) is None
    with torch.autocast("cpu", torch.float16):
        assert layers._linear_input_dtype(x32) is None


@needs_ext
def test_autocast_fused_adds_no_more_than_autocast_noise():
    # Under autocast the fused path may differ from the default through rare bfloat16 rounding flips
    # (module docstring); it must stay within the deviation that autocast itself causes from float32.
    # (On this net it is bit-identical.)
    net, args, kw = _synthetic_net_and_inputs()
    with torch.no_grad():
        exact = net(*args, **kw)
        with torch.autocast("cpu", torch.bfloat16):
            ref = net(*args, **kw).float()
            with layers.fused_norm():
                fused = net(*args, **kw).float()
    scale = exact.abs().max().item()
    noise, e = golden.errors(ref, exact, scale), golden.errors(fused, ref, scale)
    assert all(e[k] <= noise[k] for k in e), (e, noise)


# ---- CUDA: skipped without a GPU (run on a lent GPU by benchmarks/device/run.sh) ------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_net_fused_matches_default():
    assert _extension.has_cuda_kernels(), _extension.LOAD_ERROR
    net, args, kw = _synthetic_net_and_inputs()
    net = net.cuda()
    args = [a.cuda() for a in args]
    kw = {k: v.cuda() for k, v in kw.items()}
    with torch.no_grad():
        ref = net(*args, **kw)
        with layers.fused_norm(), torch.profiler.profile() as prof:
            fused = net(*args, **kw)
        with torch.autocast("cuda", torch.bfloat16):
            ref16 = net(*args, **kw).float()
            with layers.fused_norm():
                fused16 = net(*args, **kw).float()
    assert {"pid::rms_norm_modulate", "pid::rms_norm_modulate_pixels", "pid::gated_residual"} <= {
        e.name for e in prof.events()}
    scale = ref.abs().max().item()
    e = golden.errors(fused, ref, scale)
    assert e["rel_l2"] <= REL_L2 and e["max_abs_rel"] <= SYNTHETIC_TOL["max_abs_rel"], e
    noise, e16 = golden.errors(ref16, ref, scale), golden.errors(fused16, ref16, scale)
    assert all(e16[k] <= noise[k] for k in e16), (e16, noise)


def test_switches_are_per_thread():
    """Decoders of different precisions may run in different threads: each thread keeps its own switches."""
    import threading

    import pid.ops
    from pid.nn.layers import fused_norm, fused_norm_enabled

    inside, release, seen = threading.Event(), threading.Event(), {}
    before = (fused_norm_enabled(), pid.ops._setting.kernels)

    def worker():
        with fused_norm(True), pid.ops.kernels_enabled(False):
            inside.set()
            release.wait(10)
            seen["worker"] = (fused_norm_enabled(), pid.ops._setting.kernels)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    seen["main"] = (fused_norm_enabled(), pid.ops._setting.kernels)
    release.set()
    thread.join()
    assert seen == {"worker": (True, False), "main": before}
    assert before != (True, False)
