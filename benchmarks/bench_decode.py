"""End-to-end decode: the reference implementation's eager path vs pid's fast path, in one process.

reference: float32 weights + bf16 autocast, the full network forward at every step (the latent CNN and
           every timestep-only product recomputed), PyTorch ops only (SDPA, eager norms and sampler
           arithmetic: an ExecutionPlan with kernels=False), the 4-step student loop — what the official code runs.
fast:      pid.PidDecoder(precision="fast").decode: bf16 weights, hoisted latent/caption/timestep work,
           fused kernels, bounded-memory pixel blocks.
graph:     the fast path with cuda_graph=True (CUDA only): the decode captured once, then replayed; its peak
           memory is measured on the capturing call.
Both see the same latent, caption embeddings and noise. Without --checkpoint the network has random weights
(bf16 values) of the chosen architecture: timing does not need trained weights.

    python benchmarks/bench_decode.py --arch small --sizes 256,512            # CPU
    python benchmarks/bench_decode.py --arch full --device cuda --sizes 1024,2048,4096 --peak-tflops 790
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import pid
from pid import _extension, sampling
from pid.archs import ARCHS, random_net
from pid.bench import measure
from pid.decoder import PidDecoder
from pid.flops import decode_flops
from pid.memory import estimate_memory, parameter_bytes
from pid.nn import PidNet
from pid.plan import ExecutionPlan

# The official eager path: float32 weights under bf16 autocast, PyTorch ops only.
OFFICIAL = ExecutionPlan(precision="reference", kernels=False)

def reference_decode(net: PidNet, latent, sigma, y, noise, eps, device, steps: int):
    """The official student loop: full forward per step under bf16 autocast (entered once around the loop), float32
    weights, PyTorch ops only."""
    def velocity(x, t, step):
        return net(x, t * 1000, y, lq_latent=latent, degrade_sigma=sigma, plan=OFFICIAL)
    with torch.no_grad(), OFFICIAL.autocast(device.type):
        return sampling.sample_student(velocity, noise, steps=steps, step_noises=eps, use_kernel=False).clamp(-1, 1)


def print_row(r: dict, paths: list[str]) -> None:
    for path in paths:
        e = r[path]
        floor = f"{e['vs_flop_floor']:.2f}" if "vs_flop_floor" in e else "-"
        mem = f"{e['peak_gib']:.2f}" if "peak_gib" in e else "-"
        print(f"{r['size']:>6} {path:10} {e['median_s']:9.3f} {e['min_s']:7.3f}..{e['max_s']:<7.3f} "
              f"{e['tflops_per_s']:8.2f} {floor:>8} {mem:>9}", flush=True)
    speedups = [f"{k[8:]} {v:.2f}x" for k, v in r.items() if k.startswith("speedup_")]
    est = f"fast peak estimate {r['fast_estimate_gib']:.2f} GiB" if "fast_estimate_gib" in r else ""
    if speedups or est:
        print(f"{'':>6} " + "; ".join(([f"vs the reference path: {', '.join(speedups)}"] if speedups else []) +
                                      ([est] if est else [])), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="small")
    ap.add_argument("--checkpoint", help="a real checkpoint instead of random weights")
    ap.add_argument("--variant")
    ap.add_argument("--sizes", default="256,512", help="output sides, comma-separated (square images)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paths", default="reference,fast", help="reference, fast, graph (CUDA), comma-separated")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOP-floor ratio")
    ap.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if why := _extension.missing_kernels(device.type):
        raise SystemExit(f"pid: {why}")
    paths = args.paths.split(",")
    if "graph" in paths and device.type != "cuda":
        ap.error("the graph path needs --device cuda")

    if args.checkpoint:
        ref_net = pid.load(args.checkpoint, variant=args.variant, device=device, precision="reference").net
        cfg = ref_net.config
    else:
        cfg = ARCHS[args.arch]
        ref_net = random_net(cfg, device)
    fast = PidDecoder(PidNet(cfg).to(device).eval(), precision="float32")
    fast.net.load_state_dict(ref_net.state_dict())
    fast = PidDecoder(fast.net.bfloat16().requires_grad_(False), precision="fast")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid bench_decode: {args.checkpoint or args.arch + ' architecture, random weights'}; {name}; "
          f"torch {torch.__version__}; batch {args.batch}; {args.steps} steps")
    print(f"{'size':>6} {'path':10} {'median s':>9} {'min..max s':>15} {'TFLOP/s':>8} {'x floor':>8} {'peak GiB':>9}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        gen = torch.Generator().manual_seed(size)
        h = w = size // cfg.pixels_per_latent
        latent = torch.randn(args.batch, cfg.lq_latent_channels, h, w, generator=gen).bfloat16().float().to(device)
        y = torch.randn(args.batch, 300, cfg.txt_embed_dim, generator=gen).bfloat16().float().to(device)
        sigma = torch.full((args.batch,), 0.2, device=device)
        shape = (args.batch, 3, size, size)
        noise = torch.randn(shape, generator=gen).to(device)
        eps = [torch.randn(shape, generator=gen).to(device) for _ in range(args.steps - 1)]
        runs = {
            "reference": lambda: reference_decode(ref_net, latent, sigma, y, noise, eps, device, args.steps),
            "fast": lambda: fast.decode(latent, sigma=sigma, caption_embeds=y, noise=noise, step_noises=eps,
                                        steps=args.steps, progress=False),
            "graph": lambda: fast.decode(latent, sigma=sigma, caption_embeds=y, noise=noise, step_noises=eps,
                                         steps=args.steps, progress=False, cuda_graph=True),
        }
        flops = decode_flops(cfg, size, size, args.steps) * args.batch
        result = {"size": size, "batch": args.batch, "tflop": flops / 1e12}
        for path in paths:
            weights = parameter_bytes(ref_net if path == "reference" else fast.net)
            entry = measure(runs[path], device, flops, args.repeats, args.warmup, None if args.no_memory else weights,
                            fast.release_graphs if path == "graph" else None)  # graph: measure the capturing call
            if args.peak_tflops:
                entry["vs_flop_floor"] = entry["median_s"] / (flops / (args.peak_tflops * 1e12))
            result[path] = entry
        if "fast" in result:
            result["fast_estimate_gib"] = estimate_memory(cfg, size, size, args.batch, "fast").peak / 2**30
        if "reference" in result:
            for path in paths:
                if path != "reference":
                    result[f"speedup_{path}"] = result["reference"]["median_s"] / result[path]["median_s"]
        rows.append(result)
        print_row(result, paths)
        if args.json:  # after every size, so a run stopped at a time cap keeps what it measured
            Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args),
                                                   "results": rows}, indent=1))

    return 0


if __name__ == "__main__":
    sys.exit(main())
