"""Per-module checks against float64 formulas written independently from the reference network's definitions."""

import math

import pytest
import torch
import torch.nn.functional as F

from pid.archs import TINY
from pid.config import PidConfig
from pid.nn import PidNet, SigmaGate
from pid.nn.latent_adapter import align_latent_to_grid
from pid.nn.layers import RMSNorm, TimestepEmbedder, pixel_sincos_table
from pid.nn.pidnet import patchify, unpatchify
from pid.nn.pit import PiTBlock
from pid.nn.mmdit import MMDiTBlock
from pid.nn.rope import apply_rope, ntk_theta, rope_1d, rope_2d
from pid.plan import ExecutionPlan

# float32 tables vs float64 formulas: angles up to ~16 rad in float32 carry ~2e-6 absolute error.
TABLE_TOL = 1e-5


def _rope2d_f64(head_dim, gh, gw, theta_h, theta_w):
    """The reference's 2-D RoPE: positions linspace(0, 16), n_f = d/4 frequencies θ^(−4m/d), layout [x f0, y f0, x f1, ...]."""
    xs = torch.tensor([16.0 * j / (gw - 1) if gw > 1 else 0.0 for j in range(gw)], dtype=torch.float64)
    ys = torch.tensor([16.0 * i / (gh - 1) if gh > 1 else 0.0 for i in range(gh)], dtype=torch.float64)
    m = torch.arange(head_dim // 4, dtype=torch.float64)
    ang = torch.zeros(gh, gw, head_dim // 2, dtype=torch.float64)
    ang[:, :, 0::2] = xs[None, :, None] * (theta_w ** (-4 * m / head_dim))
    ang[:, :, 1::2] = ys[:, None, None] * (theta_h ** (-4 * m / head_dim))
    ang = ang.reshape(gh * gw, -1)
    return ang.cos(), ang.sin()


@pytest.mark.parametrize("head_dim", [64, 72, 16])
@pytest.mark.parametrize("grid", [(8, 8), (5, 11), (1, 7), (13, 2)])
def test_rope_2d_original(head_dim, grid):
    cos, sin = rope_2d(head_dim, *grid, mode="original")
    rcos, rsin = _rope2d_f64(head_dim, *grid, 10000.0, 10000.0)
    assert cos.dtype == torch.float32 and cos.shape == (grid[0] * grid[1], head_dim // 2)
    assert (cos.double() - rcos).abs().max() < TABLE_TOL and (sin.double() - rsin).abs().max() < TABLE_TOL


@pytest.mark.parametrize("head_dim,grid,ref", [(64, (128, 128), (64, 64)), (72, (128, 128), (64, 64)),
                                               (64, (256, 192), (128, 128)), (72, (12, 20), (8, 8)),
                                               (64, (64, 64), (64, 64))])
def test_rope_2d_ntk(head_dim, grid, ref):
    d_a = head_dim / 2
    theta_h = 10000.0 * (grid[0] / ref[0]) ** (d_a / (d_a - 2))
    theta_w = 10000.0 * (grid[1] / ref[1]) ** (d_a / (d_a - 2))
    cos, sin = rope_2d(head_dim, *grid, mode="ntk_aware", ref_grid=ref)
    rcos, rsin = _rope2d_f64(head_dim, *grid, theta_h, theta_w)
    assert (cos.double() - rcos).abs().max() < TABLE_TOL and (sin.double() - rsin).abs().max() < TABLE_TOL


def test_ntk_theta_spec_examples():
    # the reference's NTK-aware bases: v1 at 2048² (grid 128, ref 64): 20945.9 (MMDiT), 20832.3 (PiT); v1 at 4096²: 43873 / 43399
    assert ntk_theta(128, 64, 64) == pytest.approx(20945.9, abs=0.1)
    assert ntk_theta(128, 64, 72) == pytest.approx(20832.3, abs=0.1)
    assert ntk_theta(256, 64, 64) == pytest.approx(43873, abs=1)
    assert ntk_theta(256, 64, 72) == pytest.approx(43399, abs=1)
    assert ntk_theta(128, 128, 64) == 10000.0


def test_rope_1d_text():
    cos, sin = rope_1d(64, 300)
    k = torch.arange(32, dtype=torch.float64)
    ang = torch.arange(300, dtype=torch.float64)[:, None] * 10000.0 ** (-2 * k / 64)[None]
    assert (cos.double() - ang.cos()).abs().max() < 1e-4 and (sin.double() - ang.sin()).abs().max() < 1e-4


def test_apply_rope_rotates_interleaved_pairs():
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    ang = torch.rand(5, 4, dtype=torch.float64) * 6
    out = apply_rope(x, (ang.cos(), ang.sin()))
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = ang.cos()[None, :, None], ang.sin()[None, :, None]
    assert torch.allclose(out[..., 0::2], a * c - b * s) and torch.allclose(out[..., 1::2], a * s + b * c)
    bf = apply_rope(x.bfloat16(), (ang.float().cos(), ang.float().sin()))
    assert bf.dtype == torch.bfloat16


@pytest.mark.parametrize("dim,h,w", [(16, 16, 32), (8, 5, 3)])
def test_pixel_sincos_table(dim, h, w):
    table = pixel_sincos_table(h, w, dim)
    assert table.dtype == torch.float64 and table.shape == (h * w, dim)
    q = dim // 4
    for (yy, xx) in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
        row = table[yy * w + xx]
        for k in range(q):
            om = 10000.0 ** (-k / q)
            assert row[k] == pytest.approx(math.sin(xx * om)) and row[q + k] == pytest.approx(math.cos(xx * om))
            assert row[2 * q + k] == pytest.approx(math.sin(yy * om))
            assert row[3 * q + k] == pytest.approx(math.cos(yy * om))


def test_timestep_frequencies():
    emb = TimestepEmbedder(32).frequencies(torch.tensor([0.0, 342.0, 999.0]))
    k = torch.arange(128, dtype=torch.float64)
    args = torch.tensor([0.0, 342.0, 999.0], dtype=torch.float64)[:, None] * torch.exp(-math.log(10) * k / 128)
    ref = torch.cat([args.cos(), args.sin()], dim=1)  # cos first, max period 10
    assert (emb.double() - ref).abs().max() < 1e-3  # float32 angles up to 1000 rad: ~6e-5 rad each


def test_rmsnorm_casts_before_weight():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 8))
    x = torch.randn(3, 8).bfloat16()
    xf = x.double()
    normed = (xf / (xf.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()).bfloat16()
    out = norm(x)
    assert out.dtype == torch.float32  # bf16 normalised value times the float32 weight
    torch.testing.assert_close(out, norm.weight.detach() * normed.float(), rtol=0, atol=1e-6)


def test_unfold_fold_pixel_order():
    """Patch token l = hs·Ws + ws, feature ch·256 + py·16 + px (F.unfold's order, as the reference); pid's reshapes equal F.unfold and
    F.fold (kernel = stride = 16), which the reference uses."""
    x = torch.randn(2, 3, 48, 32)
    tokens = patchify(x, 16)
    for (hs, ws, ch, py, px) in [(0, 0, 0, 0, 0), (2, 1, 2, 15, 3), (1, 0, 1, 7, 15)]:
        assert tokens[1, hs * 2 + ws, ch * 256 + py * 16 + px] == x[1, ch, hs * 16 + py, ws * 16 + px]
    assert torch.equal(tokens, F.unfold(x, kernel_size=16, stride=16).transpose(1, 2))
    per_pixel = torch.randn(2 * 6, 256, 3)  # [B·L, p², C] as the final layer emits
    folded = F.fold(per_pixel.view(2, 6, 256, 3).permute(0, 3, 2, 1).reshape(2, 768, 6), (48, 32), 16, stride=16)
    assert torch.equal(unpatchify(per_pixel.view(2, 3, 2, 16, 16, 3)), folded)


def test_flux2_unpatchify_and_nearest_alignment():
    cfg = PidConfig(lq_latent_channels=128, latent_spatial_down_factor=16, lq_latent_unpatchify_factor=2)
    lat = torch.randn(1, 128, 3, 5)
    out = align_latent_to_grid(lat, 12, 20, cfg)  # 32 ch at /8 → ratio 2
    assert out.shape == (1, 32, 12, 20)
    for (c, i, j, h, w) in [(0, 0, 0, 0, 0), (31, 1, 1, 2, 4), (5, 1, 0, 1, 3)]:
        value = lat[0, c * 4 + i * 2 + j, h, w]
        # unpatchified position (2h + i, 2w + j) is then repeated 2x2 by nearest upsampling
        for dy in range(2):
            for dx in range(2):
                assert out[0, c, 2 * (2 * h + i) + dy, 2 * (2 * w + j) + dx] == value


def test_nearest_alignment_non_integer_ratio():
    """PyTorch 'nearest': source index floor(dst · in / out)."""
    cfg = PidConfig()
    lat = torch.randn(1, 16, 3, 4)
    out = align_latent_to_grid(lat, 7, 9, cfg)
    for dy in range(7):
        for dx in range(9):
            assert out[0, 5, dy, dx] == lat[0, 5, dy * 3 // 7, dx * 4 // 9]


@pytest.mark.parametrize("width", [1, 24])
def test_sigma_gate_formula(width):
    gate = SigmaGate(24, width).double()
    with torch.no_grad():
        gate.log_alpha.fill_(0.7)
    x, tokens = torch.randn(2, 5, 24, dtype=torch.float64), torch.randn(2, 5, 10, dtype=torch.float64)
    head = torch.nn.Linear(10, 24).double()
    sigma = torch.tensor([0.0, 0.6])
    out = gate(x, gate.prepare(tokens, head, sigma), plan=ExecutionPlan())
    lq = head(tokens)
    logit = gate.content_proj(torch.cat([x, lq], dim=-1)) - math.exp(0.7) * sigma.double().view(2, 1, 1)
    ref = x + torch.sigmoid(logit) * lq  # [x ; lq] with x first
    assert torch.allclose(out, ref, atol=1e-6)
    # Kept only as the CNN's features, the gate's feature is made again at use: the same values.
    lazy = gate.prepare(tokens, head, sigma, keep=False)
    assert lazy.lq is None and lazy.lq_logit is None
    assert torch.equal(gate(x, lazy, plan=ExecutionPlan()), out)


def test_mmdit_adaln_chunk_order():
    """Chunks of the 6D modulation: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp. With
    only gate_mlp non-zero on the image stream, x gains exactly gate_mlp · mlp(norm(x))."""
    D = 16
    blk = MMDiTBlock(D, 2, 32).double()
    c = torch.zeros(1, 1, D, dtype=torch.float64)
    with torch.no_grad():
        for mod in (blk.adaLN_modulation_img[0], blk.adaLN_modulation_txt[0]):
            mod.weight.zero_()
            mod.bias.zero_()
        blk.adaLN_modulation_img[0].bias[5 * D:] = 0.5  # gate_mlp only
    x, y = torch.randn(1, 4, D, dtype=torch.float64), torch.randn(1, 3, D, dtype=torch.float64)
    rope = rope_2d(8, 2, 2)
    mods = blk.modulation(c)  # named: only the image stream's feed-forward gate is 0.5
    assert torch.equal(mods.image.mlp.gate, torch.full((1, 1, D), 0.5, dtype=torch.float64))
    assert not any(t.any() for t in (*mods.image.attention, mods.image.mlp.shift, mods.image.mlp.scale, *mods.text.attention,
                                     *mods.text.mlp))
    out_x, out_y = blk(x, y, mods, tuple(t.double() for t in rope), None, plan=ExecutionPlan())
    assert torch.allclose(out_x, x + 0.5 * blk.mlp_x(blk.norm_x2(x)))
    assert torch.allclose(out_y, y)  # all text gates are zero


def test_pit_per_pixel_modulation_layout():
    """adaLN output feature o → (pixel o // 6c, chunk (o % 6c) // c, channel o % c)."""
    c, p = 4, 2
    blk = PiTBlock(c, 8, p, 8, 2).double()
    with torch.no_grad():
        blk.adaLN_modulation[0].weight.zero_()
        bias = torch.zeros(p * p, 6, c, dtype=torch.float64)
        bias[:, 5] = torch.arange(p * p * c, dtype=torch.float64).view(p * p, c) / 10  # gate_mlp per pixel
        blk.adaLN_modulation[0].bias.copy_(bias.reshape(-1))
    x = torch.randn(3, p * p, c, dtype=torch.float64)
    out = blk(x, torch.zeros(3, 8, dtype=torch.float64), 1, tuple(t.double() for t in rope_2d(4, 1, 3)),
              plan=ExecutionPlan())
    assert torch.allclose(out, x + bias[:, 5][None] * blk.mlp(blk.norm2(x)))


def test_last_block_skips_dead_text_path():
    """The last block's text output is never read: skipping it (text_out=False) gives the same image stream."""
    blk = MMDiTBlock(16, 2, 32)
    x, y, c = torch.randn(2, 6, 16), torch.randn(2, 3, 16), torch.randn(2, 1, 16)
    rope = rope_2d(8, 2, 3)
    mods, plan = blk.modulation(c), ExecutionPlan()
    full_x, _ = blk(x, y, mods, rope, rope_1d(8, 3), plan=plan)
    skip_x, skip_y = blk(x, y, mods, rope, rope_1d(8, 3), plan=plan, text_out=False)
    assert skip_y is None
    torch.testing.assert_close(skip_x, full_x, rtol=1e-6, atol=1e-6)


def test_forward_input_errors():
    net = PidNet(TINY)
    x, t, y = torch.randn(1, 3, 32, 48), torch.tensor([500.0]), torch.randn(1, 4, TINY.txt_embed_dim)
    lat = torch.randn(1, 16, 1, 1)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        net(torch.randn(1, 3, 30, 48), t, y, lat, 0.0)
    with pytest.raises(ValueError, match=r"lq_latent must be \[1, 16"):
        net(x, t, y, torch.randn(1, 4, 1, 1), 0.0)
    with pytest.raises(ValueError, match="degrade_sigma is required"):
        net(x, t, y, lat)
    with pytest.raises(ValueError, match="caption embeddings"):
        net(x, t, torch.randn(1, 4, 9), lat, 0.0)
    assert net(x, t, y, lat, 0.3).shape == x.shape
    assert net(x, t, y).shape == x.shape  # no latent: the plain PixelDiT path, as the reference allows


@pytest.mark.parametrize("shape,groups", [((1, 8, 5, 7), 4), ((2, 12, 3, 1), 4), ((3, 6, 17, 9), 2), ((1, 4, 2, 1), 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_split_matches_group_norm(shape, groups, dtype):
    from pid.nn.layers import group_norm_split

    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 3 + 1).to(dtype)
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    out = group_norm_split(x, groups, w, b, 1e-5)
    exact = F.group_norm(x.double(), groups, w.double(), b.double(), 1e-5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=2e-6 * exact.abs().max().item())
