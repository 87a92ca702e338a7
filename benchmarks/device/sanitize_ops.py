"""Runs every pid CUDA kernel on small, odd-sized inputs, for `compute-sanitizer --tool memcheck`.

A tiny network's fast decode drives the gate, both norm+modulate forms, the gated residual, q/k norm+RoPE
and the student step; the DPM step is called directly. The tiny network's head dims (16, 12) are not the
attention kernel's, so the attention kernels (bfloat16 tensor-core and float32) and both qk_norm_rope kernels
are called directly at head_dim 64 / 72: global, windowed with text, image queries only, and through strides
that rule out 16-byte loads. Its gates are per token, so the per-channel gate (tensor-core GEMM, bfloat16 and
float32 x) is called directly with partial tiles, with and without 16-byte loads. Exits non-zero if anything is
non-finite; the sanitizer reports bad accesses.
"""

import sys

import torch

import pid.ops as ops
from pid.archs import ARCHS, random_net
from pid.decoder import PidDecoder


def main() -> int:
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    dec = PidDecoder(random_net(ARCHS["tiny"], dev).bfloat16(), precision="fast", attention="kernel")
    cfg = dec.config
    latent = torch.randn(2, cfg.lq_latent_channels, 5, 7, device=dev)  # odd grid
    y = torch.randn(2, 300, cfg.txt_embed_dim, device=dev)
    outs = [dec.decode(latent, sigma=[0.0, 0.3], caption_embeds=y, progress=False)]
    outs.append(dec.decode(latent, sigma=0.1, caption_embeds=y, window=3, progress=False))
    x, vc, vu, d = (torch.randn(3, 3, 17, 19, device=dev) for _ in range(4))
    outs += ops.dpm_step(x, vc.bfloat16(), vu.bfloat16(), d, guidance=5.0, t=0.7, t_ratio=0.9, alpha_phi=0.1,
                         half_alpha_phi=0.05, inv_r=1.3)
    outs += attention_calls(dev)
    outs += per_channel_gate_calls(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    bad = [i for i, o in enumerate(outs) if not torch.isfinite(o).all()]
    print(f"sanitize_ops: {len(outs)} outputs, non-finite: {bad or 'none'}")
    return 1 if bad else 0


def attention_calls(dev: torch.device) -> list:
    outs = []
    for dtype in (torch.bfloat16, torch.float32):
        for d, n_text, grid in ((72, 0, (5, 7)), (64, 13, (6, 5))):
            S = n_text + grid[0] * grid[1]
            q, k, v = (torch.randn(2, 3, S, d, device=dev, dtype=dtype) for _ in range(3))
            outs.append(torch.ops.pid.attention(q, k, v, 0, 0, 0, 0))
            outs.append(torch.ops.pid.attention(q, k, v, 3, *grid, n_text))
            outs.append(torch.ops.pid.attention(q[:, :, n_text:], k, v, 2, *grid, n_text))  # image queries
            wide = torch.randn(2, 3, S, d + 3, device=dev, dtype=dtype)[..., :d]  # token stride d + 3
            outs.append(torch.ops.pid.attention(wide, k, wide, 0, 0, 0, 0))
        for d in (64, 72):
            qkv = torch.randn(2, 9, 3, 4, d, device=dev, dtype=dtype)
            w = torch.randn(d, device=dev)
            cos, sin = torch.randn(9, d // 2, device=dev), torch.randn(9, d // 2, device=dev)
            q_out, k_out = (torch.empty(2, 4, 11, d, device=dev, dtype=dtype) for _ in range(2))
            torch.ops.pid.qk_norm_rope(qkv, w, w, cos, sin, 1e-6, q_out, 1, k_out, 2)
            outs += [q_out[:, :, 1:10], k_out[:, :, 2:11]]
    return outs


def per_channel_gate_calls(dev: torch.device) -> list:
    outs = []
    for D in (72, 70):  # 16-byte loads, and not
        for x_dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(2, 37, D, device=dev, dtype=x_dtype)
            lq, lq_logit = (torch.randn(2, 37, D, device=dev, dtype=torch.bfloat16) for _ in range(2))
            w = (torch.randn(D, D, device=dev) / D**0.5).bfloat16()
            outs.append(torch.ops.pid.sigma_gate(x, lq, lq_logit, w, torch.rand(2, device=dev)))
    return outs


if __name__ == "__main__":
    sys.exit(main())
