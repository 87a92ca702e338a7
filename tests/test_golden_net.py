"""Golden parity of the network: our PidNet against outputs of the reference implementation."""

import pytest
import torch

import pid
from pid import golden
from pid.nn import PidNet
from pid.plan import ExecutionPlan

from conftest import SHARED

GOLDEN = golden.find_golden_dir(SHARED / "golden")
NET_CASES = [c.name for c in golden.list_cases(GOLDEN, "net_forward")] if GOLDEN else []
needs_golden = pytest.mark.skipif(GOLDEN is None, reason=f"no golden folder (${golden.ENV_VAR} or {SHARED}/golden)")

REL_L2 = 1e-5  # acceptance bound of the faithful-engine issue, float32
# Each golden test runs the float32 network as the reference writes it, and with the fast regime's fused
# norm / modulation / gated-residual kernels (pid.ops, tests/test_nn_fused_norm.py): the same bounds hold for both.
PLANS = {"reference-norms": ExecutionPlan(), "fused-norms": ExecutionPlan(fused_norm=True)}
with_plans = pytest.mark.parametrize("plan", list(PLANS.values()), ids=list(PLANS))


def _case(name):
    return golden.GoldenCase(name, GOLDEN)


def _assert_close(out, ref, case):
    tol = case.meta["tolerance"]["float32"]
    e = golden.errors(out, ref, case.meta["output_max_abs"])
    assert e["rel_l2"] <= REL_L2, e
    assert e["max_abs_rel"] <= tol["max_abs_rel"], e
    assert e["mean_abs_rel"] <= tol["mean_abs_rel"], e


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference run used one thread
    yield
    torch.set_num_threads(threads)


def test_golden_cases_present():
    if GOLDEN is None:
        pytest.skip("no golden folder")
    assert {"v1_net", "v15_net", "v15_flux2_net"} <= set(NET_CASES)


@needs_golden
@with_plans
@pytest.mark.parametrize("name", NET_CASES)
def test_net_matches_reference_weights(name, plan):
    case = _case(name)
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    _assert_close(golden.run_net_case(case, net, plan), case.io["output"], case)


@needs_golden
@with_plans
@pytest.mark.parametrize("name", NET_CASES)
def test_net_intermediates_match(name, plan):
    """The debug taps of the reference run: time embedding, LQ outputs, stream entering/leaving blocks."""
    case = _case(name)
    io, meta = case.io, case.meta
    net = PidNet.from_reference_kwargs(meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    cfg = net.config
    B, _, H, W = io["x"].shape
    grid = (H // cfg.patch_size, W // cfg.patch_size)
    seen = {}
    hooks = [net.t_embedder.register_forward_hook(lambda m, a, out: seen.__setitem__("dbg.t_emb", out))]
    for i, blk in enumerate(net.patch_blocks):
        hooks.append(blk.register_forward_hook(
            lambda m, a, out, i=i: seen.update({f"dbg.patch_block_{i}.img_in": a[0], f"dbg.patch_block_{i}.img_out": out[0]})))
    hooks.append(net.patch_blocks[0].register_forward_hook(
        lambda m, a, out: seen.__setitem__("dbg.patch_block_0.txt_in", a[1])))
    hooks.append(net.pixel_blocks[0].register_forward_hook(lambda m, a, out: seen.__setitem__("dbg.s_cond", a[1])))
    with torch.no_grad():
        cond = net.encode_condition(io["lq_latent"], io["degrade_sigma"], grid, plan=plan)
        net.velocity(io["x"], io["t"], net.encode_text(io["y"], plan=plan), cond, plan=plan)
    for h in hooks:
        h.remove()
    feats = [g.lq for g in cond.gates] + ([cond.pit.lq] if cond.pit is not None else [])
    seen.update({f"dbg.lq_out_{k}": f for k, f in enumerate(feats)})
    dbg = [k for k in io if k.startswith("dbg.")]
    assert dbg, "case has no debug tensors"
    for key in dbg:
        ref = io[key]
        ours = seen[key].reshape(ref.shape)
        err = (ours - ref).abs().max().item() / meta["max_abs"][key]
        assert err <= 1e-5, (key, err)


@needs_golden
@with_plans
def test_checkpoint_container_loads_and_matches(plan):
    """`.ckpt.pth` (bf16 values under `net.`) through pid.load, against the case's output_ckpt."""
    cases = [c for c in golden.list_cases(GOLDEN, "net_forward") if c.ckpt_path]
    assert cases, "no golden case ships a checkpoint container"
    for case in cases:
        decoder = pid.load(case.ckpt_path, config=case.meta["net_kwargs"], precision="float32")
        assert decoder.dtype == torch.float32 and decoder.variant is None
        _assert_close(golden.run_net_case(case, decoder.net, plan), case.io["output_ckpt"], case)


@needs_golden
@with_plans
@pytest.mark.parametrize("name", NET_CASES)
def test_split_equals_forward(name, plan):
    case = _case(name)
    io = case.io
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    H, W = io["x"].shape[-2:]
    p = net.config.patch_size
    with torch.no_grad():
        full = net(io["x"], io["t"], io["y"], lq_latent=io["lq_latent"], degrade_sigma=io["degrade_sigma"], plan=plan)
        cond = net.encode_condition(io["lq_latent"], io["degrade_sigma"], (H // p, W // p), plan=plan)
        text = net.encode_text(io["y"], plan=plan)
        split = net.velocity(io["x"], io["t"], text, cond, plan=plan)
        again = net.velocity(io["x"], io["t"], text, cond, plan=plan)  # reuse across steps changes nothing
        hoisted = net.velocity(io["x"], net.encode_time(io["t"], plan=plan), text, cond, plan=plan)  # timestep work up front
    assert torch.equal(full, split) and torch.equal(split, again) and torch.equal(split, hoisted)


@needs_golden
@with_plans
def test_batch_rows_are_independent(plan):
    """Each sample of a batch is decoded as if alone (no cross-sample leakage), e.g. per-sample sigma."""
    case = _case("v15_net")
    io = case.io
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    with torch.no_grad():
        full = net(io["x"], io["t"], io["y"], lq_latent=io["lq_latent"], degrade_sigma=io["degrade_sigma"], plan=plan)
        one = net(io["x"][1:], io["t"][1:], io["y"][1:], lq_latent=io["lq_latent"][1:],
                  degrade_sigma=io["degrade_sigma"][1:], plan=plan)
    torch.testing.assert_close(one, full[1:], rtol=1e-5, atol=1e-5 * case.meta["output_max_abs"])


@needs_golden
@pytest.mark.parametrize("chunk", [1, 7, 24, 1000])
def test_chunked_pixel_stage_equals_unchunked(chunk):
    """Bounded-memory pixel blocks (patch chunks, adaLN recomputed, x updated in place) compute the same."""
    case = _case("v15_net")
    io = case.io
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    H, W = io["x"].shape[-2:]
    with torch.no_grad():
        cond = net.encode_condition(io["lq_latent"], io["degrade_sigma"], (H // 16, W // 16))
        text = net.encode_text(io["y"])
        full = net.velocity(io["x"], io["t"], text, cond)
        chunked = net.velocity(io["x"], io["t"], text, cond, plan=ExecutionPlan(pixel_chunk=chunk))
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5 * case.meta["output_max_abs"])
