"""torch.compile traces the whole per-step network (custom ops through their fake kernels) without graph
breaks, and computes what eager computes."""

import pytest
import torch

from pid.archs import TINY
from pid.nn import PidNet
from pid.plan import ExecutionPlan


@pytest.mark.parametrize("fused", [False, True], ids=["reference-ops", "fused-ops"])
def test_compiled_velocity_matches_eager(fused):
    torch.manual_seed(0)
    net = PidNet(TINY).eval().requires_grad_(False)
    x, t, y = torch.randn(1, 3, 64, 96), torch.tensor([500.0]), torch.randn(1, 10, TINY.txt_embed_dim)
    latent, sigma = torch.randn(1, 16, 2, 3), torch.tensor([0.3])
    plan = ExecutionPlan(fused_norm=fused)  # fused: the fast path's norm/modulate/gated-residual kernels
    with torch.no_grad():
        cond = net.encode_condition(latent, sigma, (4, 6), plan=plan)
        text, time = net.encode_text(y, plan=plan), net.encode_time(t, plan=plan)
        eager = net.velocity(x, time, text, cond, plan=plan)
        compiled = torch.compile(net.velocity, fullgraph=True)(x, time, text, cond, plan=plan)
    # float32 both ways; inductor may reorder reductions: a few ulps of the output scale
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())
