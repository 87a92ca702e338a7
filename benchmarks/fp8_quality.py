"""Quality of the fp8 regime: PSNR of fp8 (and fast) decodes against the reference regime, identical inputs and noise,
on the golden networks (their float32 weights rounded to bf16, as released checkpoints are) and the tiny test network.

    python benchmarks/fp8_quality.py --device cpu                    # the exact emulation (quality, not speed)
    PID_GOLDEN_DIR=... python benchmarks/fp8_quality.py --device cuda --json fp8_quality.json

On a GPU with fp8 tensor cores, "fp8" runs torch._scaled_mm and "fp8 emulated" the float32 emulation of the same
arithmetic on the same GPU (their gap is the summation order); elsewhere "fp8" is the emulation. "fp8 + PiT" quantises
the PiT blocks' Linears too (not the regime's default: this column is why). The released
architecture's fp8 PSNR (random weights) comes from benchmarks/bench_decode.py --paths reference,fp8 --psnr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import pid
from pid import golden
from pid.archs import TINY, random_net
from pid.compare import psnr
from pid.nn.fp8 import PIT_LINEARS, Fp8Linear, quantize_linears
from pid.ops import _fp8


def decode_case(weights, config, io, regime: str, device) -> torch.Tensor:
    """One decode in `regime`: a precision, or "fp8 emulated" (the emulation on an fp8 GPU), or "fp8 + PiT" (the
    PiT blocks' Linears in fp8 too, pid.nn.fp8.PIT_LINEARS: not the regime's default)."""
    emulate = regime == "fp8 emulated" or not _fp8.gemm_available(torch.device(device))
    decoder = pid.load(weights, config=config, precision=regime.split()[0], device=device, fp8_emulation=emulate,
                       caption_cache=None)
    if regime == "fp8 + PiT":
        quantize_linears(decoder.net, PIT_LINEARS, emulate=emulate)
    if regime.startswith("fp8") and regime != "fp8 emulated" and _fp8.gemm_available(decoder.device):
        layers = [m for m in decoder.net.modules() if isinstance(m, Fp8Linear)]
        on_gemm = sum(_fp8.gemm_shape_ok(m.in_features, m.out_features) for m in layers)
        if on_gemm < len(layers):
            print(f"  ({regime}: {len(layers) - on_gemm} of {len(layers)} fp8 Linears emulated: K or N is not a "
                  "multiple of 16)", flush=True)
    B, _, h, w = io["lq_latent"].shape
    H, W = h * decoder.config.pixels_per_latent, w * decoder.config.pixels_per_latent
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(B, 3, H, W, generator=gen)
    eps = [torch.randn(B, 3, H, W, generator=gen) for _ in range(3)]
    out = decoder.decode(io["lq_latent"], sigma=io["degrade_sigma"], caption_embeds=io["y"], noise=noise,
                         step_noises=eps, progress=False)
    return out.float().cpu()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    real_fp8 = _fp8.gemm_available(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    regimes = ["fast", "fp8", "fp8 + PiT"] + (["fp8 emulated"] if real_fp8 else [])
    print(f"fp8 quality on {name} ({'fp8 tensor cores' if real_fp8 else 'fp8 emulated: no fp8 GEMM here'}), "
          f"torch {torch.__version__}: PSNR (dB) against the reference regime")
    print(f"{'network':16} " + " ".join(f"{r:>13}" for r in regimes))
    cases = []
    folder = golden.find_golden_dir(os.environ.get(golden.ENV_VAR, "../shared/golden"))
    for case_name in ("v1_net", "v15_net", "v15_flux2_net") if folder else ():
        case = golden.GoldenCase(case_name, folder)
        weights = {k: v.bfloat16().float() for k, v in case.weights().items()}
        cases.append((case_name, weights, case.meta["net_kwargs"], case.io))
    g = torch.Generator().manual_seed(1)
    tiny_io = {"lq_latent": torch.randn(2, 16, 4, 6, generator=g), "degrade_sigma": torch.tensor([0.0, 0.3]),
               "y": torch.randn(2, 12, 32, generator=g)}
    cases.append(("tiny (128x192)", random_net(TINY).state_dict(), TINY, tiny_io))
    rows = []
    for label, weights, config, io in cases:
        reference = decode_case(weights, config, io, "reference", device)
        row = {"network": label}
        for regime in regimes:
            out = decode_case(weights, config, io, regime, device)
            row[regime] = psnr(out, reference)
        rows.append(row)
        print(f"{label:16} " + " ".join(f"{row[r]:13.2f}" for r in regimes), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": name, "fp8_gemm": real_fp8, "torch": torch.__version__, "rows": rows}, f,
                          indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
