"""The network's attention through pid.ops (qk_norm_rope + attention) and the opt-in windowed mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pid.archs import TINY
from pid.nn import PidNet
from pid.nn.mmdit import JointAttention
from pid.nn.pit import PatchAttention
from pid.nn.rope import apply_rope, rope_1d, rope_2d
from pid.plan import ExecutionPlan
from conftest import needs_ext

F32 = ExecutionPlan()  # float32, pid's kernels where they apply, global attention



def _heads(t, B, N, H):
    return t.view(B, N, 3, H, -1).unbind(2)


def joint_attention_as_written(m: JointAttention, x, y, img_rope, txt_rope, text_out=True):
    """The reference's joint attention written out with torch ops: per-stream q/k norms, RoPE, SDPA over
    [text, image]."""
    B, L, D = x.shape
    n = y.shape[1]
    qx, kx, vx = _heads(m.qkv_x(x), B, L, m.heads)
    qy, ky, vy = _heads(m.qkv_y(y), B, n, m.heads)
    qx, kx = apply_rope(m.q_norm_x(qx), img_rope), apply_rope(m.k_norm_x(kx), img_rope)
    qy, ky = m.q_norm_y(qy), m.k_norm_y(ky)
    if txt_rope is not None:
        qy, ky = apply_rope(qy, txt_rope), apply_rope(ky, txt_rope)
    q, k, v = (torch.cat([a, b], 1).transpose(1, 2) for a, b in ((qy, qx), (ky, kx), (vy, vx)))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, n + L, D)
    ox, oy = m.proj_x(out[:, n:]), m.proj_y(out[:, :n])
    return ox, (oy if text_out else None)


def patch_attention_as_written(m: PatchAttention, x, rope):
    B, L, D = x.shape
    q, k, v = _heads(m.qkv(x), B, L, m.heads)
    q, k = apply_rope(m.q_norm(q), rope), apply_rope(m.k_norm(k), rope)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return m.proj(out.transpose(1, 2).reshape(B, L, D))


def _joint(dim=128, heads=2, grid=(3, 5), n_txt=7, seed=0):
    torch.manual_seed(seed)
    m = JointAttention(dim, heads).eval()
    with torch.no_grad():
        for norm in (m.q_norm_x, m.k_norm_x, m.q_norm_y, m.k_norm_y):
            norm.weight.copy_(1 + 0.2 * torch.randn_like(norm.weight))
    x = torch.randn(2, grid[0] * grid[1], dim)
    y = torch.randn(2, n_txt, dim)
    return m, x, y, rope_2d(dim // heads, *grid), rope_1d(dim // heads, n_txt)


@pytest.mark.parametrize("text_out", [True, False])
@pytest.mark.parametrize("text_rope", [True, False])
def test_joint_attention_matches_spec_float32(text_out, text_rope):
    m, x, y, img_rope, txt_rope = _joint()
    txt_rope = txt_rope if text_rope else None
    with torch.no_grad():
        got = m(x, y, img_rope, txt_rope, plan=F32, text_out=text_out, grid=(3, 5))
        want = joint_attention_as_written(m, x, y, img_rope, txt_rope, text_out)
    for a, b in zip(got, want):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_joint_attention_matches_spec_bf16(weights):
    # float32 weights (the reference regime) and bfloat16 weights (the fast regime), both under autocast.
    m, x, y, img_rope, txt_rope = _joint(dim=144, heads=2)
    m = m.to(weights)
    img_rope, txt_rope = rope_2d(72, 3, 5), rope_1d(72, 7)
    x, y = x.to(weights), y.to(weights)
    plan = ExecutionPlan.for_precision("reference" if weights == torch.float32 else "fast")
    with torch.no_grad(), plan.autocast("cpu"):  # both regimes run under bf16 autocast
        got = m(x, y, img_rope, txt_rope, plan=plan, grid=(3, 5))
        want = joint_attention_as_written(m, x, y, img_rope, txt_rope)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        # bfloat16 results: rounding flips (one ulp, 2 u_bf16 relative) in q/k (a different sum-of-squares
        # order), in the attention output (float32 vs bfloat16 internals) and in the projection's output
        # may add up: 4 ulps of the largest output.
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=8 * 2**-8 * float(b.float().abs().max()))


def test_patch_attention_matches_spec():
    torch.manual_seed(1)
    m = PatchAttention(144, 2).eval()
    x, rope = torch.randn(2, 12, 144), rope_2d(72, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(x, rope, plan=F32, grid=(3, 4)), patch_attention_as_written(m, x, rope), rtol=2e-5,
                                   atol=2e-5)


def _small_net(seed=0):
    torch.manual_seed(seed)
    net = PidNet(TINY).eval()
    with torch.no_grad():  # non-trivial weights everywhere (zero-initialised gates would hide the attention)
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    x = torch.randn(1, 3, 16 * 3, 16 * 7)  # patch grid 3 x 7
    t, y = torch.tensor([700.0]), torch.randn(1, 5, TINY.txt_embed_dim)
    return net, (x, t, y, torch.randn(1, 16, 3, 7), torch.tensor([0.2]))


def test_window_covering_grid_equals_global_network():
    net, args = _small_net()
    with torch.no_grad():
        glob = net(*args)
        for w in (7, 9):
            assert torch.equal(net(*args, plan=ExecutionPlan(window=w, pixel_window=w)), glob)
        assert torch.equal(net(*args, plan=ExecutionPlan(window=None)), glob)


@needs_ext
def test_windowed_network_kernel_matches_reference():
    net, args = _small_net(seed=3)
    windowed = ExecutionPlan(window=3, pixel_window=2)
    with torch.no_grad():
        glob = net(*args)
        win = net(*args, plan=windowed)
        assert not torch.allclose(win, glob, rtol=1e-3, atol=1e-3)  # the window changes the function
        ref = net(*args, plan=windowed.replace(kernels=False))  # the PyTorch reference: explicit masks
    torch.testing.assert_close(win, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_plan_window_errors():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window must be a positive int"):
            ExecutionPlan(window=bad)
    with pytest.raises(ValueError, match="pixel_window"):
        ExecutionPlan(window=4, pixel_window=0)
