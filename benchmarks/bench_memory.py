"""Peak memory of a decode: the estimator per rank (`pid.estimate_memory(..., world_size=N)`) unsplit and planned for a
budget (`pid.budget.plan_for_budget`, what `decode(max_memory=)` runs), and measured peaks (weights + every tensor
the decode allocates, `pid.memory.TensorMemoryTracker`; on CUDA the allocator's peak) beside the estimate.

    python benchmarks/bench_memory.py estimates --sizes 2048,4096,8192 --ranks 1,2,4,8 --budgets 3.5GB,6GB,16GB
    python benchmarks/bench_memory.py measure --arch tiny --sizes 2048,4096 --max-memory 6GB --window 8
    python benchmarks/bench_memory.py measure --arch full --sizes 2048 --max-memory 3.5GB --steps 1 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import pid
from pid.archs import ARCHS, random_net
from pid.budget import parse_bytes, plan_for_budget
from pid.cost import estimate_memory
from pid.decoder import PidDecoder
from pid.errors import MemoryBudgetError
from pid.memory import TensorMemoryTracker, parameter_bytes

GIB = 2.0**30


def estimates(args) -> None:
    cfg = ARCHS[args.arch]
    budgets = [parse_bytes(b) for b in args.budgets.split(",")]
    print(f"| {args.arch}, {args.precision}, batch 1 | ranks | unsplit | planned for the budget (GiB, plan) |")
    print("|---|---|---|---|")
    for size, budget, text in zip(args.sizes, budgets, args.budgets.split(",")):
        for n in args.ranks:
            whole = estimate_memory(cfg, size, size, 1, args.precision, world_size=n)
            try:
                plan = plan_for_budget(cfg, size, size, 1, args.precision, budget, world_size=n)
                planned = (f"{plan.estimate.peak / GIB:.2f} ({plan.estimate.stage}; pixel_chunk {plan.pixel_chunk}, "
                           f"token_chunk {plan.token_chunk}, gate features {'kept' if plan.keep_gate_features else 'per step'})")
            except MemoryBudgetError:
                planned = "does not fit"
            print(f"| {size}², budget {text} | {n} | {whole.peak / GIB:.2f} | {planned} |")


def measure(args) -> None:
    cfg = ARCHS[args.arch]
    device = torch.device(args.device)
    net = random_net(cfg, device=device)
    if args.precision == "fast":
        net = net.bfloat16()
    decoder = PidDecoder(net, precision=args.precision, caption_cache=None)
    for size in args.sizes:
        latent = torch.randn(1, cfg.lq_latent_channels, size // 32, size // 32, device=device)
        y = torch.zeros(1, cfg.txt_max_length, cfg.txt_embed_dim, device=device)
        kwargs = dict(caption_embeds=y, steps=args.steps, window=args.window, progress=False, max_memory=args.max_memory)
        if args.max_memory is None:
            kwargs.update(pixel_chunk=args.pixel_chunk, token_chunk=args.token_chunk)
        start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device) - parameter_bytes(net)
            decoder.decode(latent, **kwargs)
            torch.cuda.synchronize(device)
            measured = torch.cuda.max_memory_allocated(device) - base
        else:
            with TensorMemoryTracker() as tracker:
                decoder.decode(latent, **kwargs)
            measured = parameter_bytes(net) + tracker.peak
        seconds = time.perf_counter() - start
        plan = decoder._call_plan(args.window, "same", kwargs.get("pixel_chunk", "auto"),
                                  kwargs.get("token_chunk", "auto"), None, args.max_memory, 1, size, size, False)
        est = estimate_memory(cfg, size, size, 1, args.precision, plan.pixel_chunk, txt_len=cfg.txt_max_length,
                              token_chunk=plan.token_chunk, keep_gate_features=plan.keep_gate_features)
        print(json.dumps({"arch": args.arch, "size": size, "device": str(device), "precision": args.precision,
                          "max_memory": args.max_memory, "pixel_chunk": plan.pixel_chunk,
                          "token_chunk": plan.token_chunk, "keep_gate_features": plan.keep_gate_features,
                          "window": args.window, "steps": args.steps, "measured_gib": round(measured / GIB, 3),
                          "estimate_gib": round(est.peak / GIB, 3), "estimate_stage": est.stage,
                          "estimate_over_measured": round(est.peak / measured, 3), "seconds": round(seconds, 1)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("estimates", "measure"):
        q = sub.add_parser(name)
        q.add_argument("--arch", choices=sorted(ARCHS), default="full" if name == "estimates" else "tiny")
        q.add_argument("--precision", choices=("float32", "reference", "fast"), default="fast")
        q.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[2048, 4096, 8192])
    q = sub.choices["estimates"]
    q.add_argument("--ranks", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    q.add_argument("--budgets", default="3.5GB,6GB,16GB", help="one per size")
    q = sub.choices["measure"]
    q.add_argument("--device", default="cpu")
    q.add_argument("--max-memory")
    q.add_argument("--pixel-chunk", type=int)
    q.add_argument("--token-chunk", type=int)
    q.add_argument("--window", type=int)
    q.add_argument("--steps", type=int, default=1)
    args = p.parse_args()
    if not pid._extension.available():
        raise SystemExit(f"pid's kernels are not loaded: {pid._extension.LOAD_ERROR}")
    (estimates if args.what == "estimates" else measure)(args)


if __name__ == "__main__":
    main()
