"""torch.compile traces the whole per-step network (custom ops through their fake kernels) without graph
breaks, and computes what eager computes."""

import pytest
import torch

from pid.config import PidConfig
from pid.nn import PidNet
from pid.nn.layers import fused_norm

CFG = PidConfig(hidden_size=64, num_heads=4, pixel_hidden_size=8, pixel_attn_hidden_size=48, pixel_num_heads=4,
                patch_depth=2, pixel_depth=1, txt_embed_dim=32, txt_max_length=12, lq_hidden_dim=32,
                lq_num_res_blocks=1, rope_ref_h=128, rope_ref_w=128)


@pytest.mark.parametrize("fused", [False, True], ids=["reference-ops", "fused-ops"])
def test_compiled_denoise_matches_eager(fused):
    torch.manual_seed(0)
    net = PidNet(CFG).eval().requires_grad_(False)
    x, t, y = torch.randn(1, 3, 64, 96), torch.tensor([500.0]), torch.randn(1, 10, 32)
    latent, sigma = torch.randn(1, 16, 2, 3), torch.tensor([0.3])
    with torch.no_grad(), fused_norm(fused):  # fused: the fast path's norm/modulate/gated-residual kernels
        cond = net.encode_condition(latent, sigma, (4, 6))
        text, time = net.encode_text(y), net.encode_time(t)
        eager = net.denoise(x, time, text, cond)
        compiled = torch.compile(net.denoise, fullgraph=True)(x, time, text, cond)
    # float32 both ways; inductor may reorder reductions: a few ulps of the output scale
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())
