"""How far a sample decoded in a batch (as `pid serve` batches requests: pid.serve.batch_decode) is from its decode
alone: the largest |difference| of the float images in [-1, 1], and how many uint8 pixels differ, for batch sizes
2..N, per network and precision. Each sample has its own seed, σ and caption, as requests do. For scale, in the
bf16 regimes: how far the same decodes alone are from the float32 regime.

    python benchmarks/bench_batch_invariance.py --arch tiny,small --precision float32,fast --batches 2,4,8
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

import pid
from pid.archs import ARCHS, random_net
from pid.captions import CaptionCache
from pid.images import to_pixels
from pid.serve.batch_decode import DecodeJob, decode_jobs


def measure(arch: str, precision: str, batch: int, side: int, device: str) -> dict:
    cfg = ARCHS[arch]
    net = random_net(cfg, device)
    if precision == "fast":
        net = net.bfloat16()
    decoder = pid.PidDecoder(net, variant=pid.get_variant("flux-v1.5"), precision=precision,
                             caption_cache=CaptionCache())
    g = torch.Generator().manual_seed(batch)
    jobs = [DecodeJob(torch.randn(1, 16, side, side, generator=g), [0.1 * (i % 5)], seed=100 + i,
                      caption_embeds=torch.randn(1, 300, cfg.txt_embed_dim, generator=g)) for i in range(batch)]
    together = decode_jobs(decoder, jobs)
    reference = None  # for scale: the same decodes in the float32 regime (the same weights' values)
    if precision != "float32":
        reference = pid.PidDecoder(copy.deepcopy(net).float(), variant=decoder.variant, precision="float32",
                                   caption_cache=CaptionCache())
    worst, pixels, exact, regime = 0.0, 0, 0, 0.0
    for job, images in zip(jobs, together):
        (alone,) = decode_jobs(decoder, [job])
        worst = max(worst, (images - alone).abs().max().item())
        pixels += int((to_pixels(images) != to_pixels(alone)).any(-1).sum())
        exact += int(torch.equal(images, alone))
        if reference is not None:
            regime = max(regime, (decode_jobs(reference, [job])[0] - alone).abs().max().item())
    return {"arch": arch, "precision": precision, "batch": batch, "max_abs": worst, "pixels_differing": pixels,
            "pixels": batch * (side * cfg.pixels_per_latent) ** 2, "samples_bit_equal": exact,
            "vs_float32": regime if reference is not None else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny,small")
    parser.add_argument("--precision", default="float32,fast")
    parser.add_argument("--batches", default="2,4,8")
    parser.add_argument("--side", type=int, default=4, help="latent side (the image is 32x larger)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}; image "
          f"{args.side * 32}x{args.side * 32}")
    print(f"{'arch':6} {'precision':9} {'batch':>5} {'max |diff|':>11} {'pixels differing':>17} {'bit-equal':>9}  "
          "(for scale: max |alone - float32 regime|)")
    for arch in args.arch.split(","):
        for precision in args.precision.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                r = measure(arch, precision, batch, args.side, args.device)
                print(f"{arch:6} {precision:9} {batch:>5} {r['max_abs']:>11.3g} "
                      f"{r['pixels_differing']:>8} of {r['pixels']:<7} {r['samples_bit_equal']:>4} of {batch}"
                      + (f"  ({r['vs_float32']:.3g})" if r["vs_float32"] is not None else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
