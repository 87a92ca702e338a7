"""Runs every pid CUDA kernel on small, odd-sized inputs, for `compute-sanitizer --tool memcheck`.

A tiny network's fast decode drives the gate, both norm+modulate forms, the gated residual, q/k norm+RoPE,
global and windowed attention (the CUDA attention kernel, not SDPA) and the student step; the DPM step is
called directly. Exits non-zero if anything is non-finite; the sanitizer reports bad accesses.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

import pid.ops as ops  # noqa: E402
from pid.bench import ARCHS, random_net  # noqa: E402
from pid.decoder import PidDecoder  # noqa: E402


def main() -> int:
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    ops.set_global_attention_backend("cuda", "kernel")
    dec = PidDecoder(random_net(ARCHS["tiny"], dev).bfloat16(), precision="fast")
    cfg = dec.config
    latent = torch.randn(2, cfg.lq_latent_channels, 5, 7, device=dev)  # odd grid
    y = torch.randn(2, 300, cfg.txt_embed_dim, device=dev)
    outs = [dec.decode(latent, sigma=[0.0, 0.3], caption_embeds=y, progress=False)]
    dec.net.set_attention_window(3)
    outs.append(dec.decode(latent, sigma=0.1, caption_embeds=y, progress=False))
    x, vc, vu, d = (torch.randn(3, 3, 17, 19, device=dev) for _ in range(4))
    outs += ops.dpm_step(x, vc.bfloat16(), vu.bfloat16(), d, guidance=5.0, t=0.7, t_ratio=0.9, alpha_phi=0.1,
                         half_alpha_phi=0.05, inv_r=1.3)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    bad = [i for i, o in enumerate(outs) if not torch.isfinite(o).all()]
    print(f"sanitize_ops: {len(outs)} outputs, non-finite: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
