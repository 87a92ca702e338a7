"""Peak memory of a decode: the estimator per rank (`pid.estimate_memory(..., world_size=N)`) unsplit and planned for a
budget (`pid.memory.plan_for_budget`, what `decode(max_memory=)` runs), and measured peaks (weights + every tensor
the decode allocates, `pid.memory.TensorMemoryTracker`; on CUDA the allocator's peak) beside the estimate.

    python benchmarks/bench_memory.py estimates --sizes 2048,4096,8192 --ranks 1,2,4,8 --budgets 3.5GB,6GB,16GB
    python benchmarks/bench_memory.py measure --arch tiny --sizes 2048,4096 --max-memory 6GB --window 8
    python benchmarks/bench_memory.py measure --arch full --sizes 2048 --max-memory 3.5GB --steps 1 --device cuda
    python benchmarks/bench_memory.py measure --arch full --sizes 4096,8192 --max-memory 16GB --shapes-only
    python benchmarks/bench_memory.py measure --arch full --device cuda --cases 2048:3.5GB,4096:6GB,8192:16GB

--shapes-only runs the decode's network and sampler code under FakeTensorMode: every op computes only its output's
shape and dtype (pid's ops through their fake kernels), so the tracker sees the exact sizes and lifetimes of every
tensor a real CPU decode allocates, in seconds, at sizes far beyond what this CPU computes (4096² and 8192² of the
released network). The weights are allocated and never read; the sampler's host-side schedule (Python floats from a
small CPU tensor) is computed outside fake mode. Only the network and sampler are run: the input checks and the final
clamp of `decode` are left out (a few image-sized tensors at most).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import pid
from pid.archs import ARCHS, random_net
from pid.decoder import PidDecoder
from pid.errors import MemoryBudgetError
from pid.memory import TensorMemoryTracker, estimate_memory, parameter_bytes, parse_bytes, plan_for_budget
from pid.plan import PRECISIONS, weights_dtype

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


def shapes_only_peak(cfg, size: int, precision: str, max_memory, steps: int, window) -> tuple[int, object]:
    """Weights + the tracked peak of one decode's network and sampler run under FakeTensorMode (see the docstring),
    and the plan it ran."""
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    from pid import sampling
    from pid.inputs import DecodeInputs
    from pid.sampling import SamplerSettings

    with torch.device("meta"):
        net = pid.PidNet(cfg)
    net = net.to_empty(device="cpu").eval().requires_grad_(False)  # allocated, never read
    net = net.to(weights_dtype(precision))
    decoder = PidDecoder(net, precision=precision, caption_cache=None, fp8_emulation=True)
    settings = SamplerSettings("student", steps)
    times = settings.times()
    schedule, tolist = sampling.student_schedule, torch.Tensor.tolist

    def real_schedule(*a, **k):  # host-side floats: computed for real
        with unset_fake_temporarily():
            return schedule(*a, **k)

    def real_tolist(t):
        with unset_fake_temporarily():
            return tolist(t)
    sampling.student_schedule, torch.Tensor.tolist = real_schedule, real_tolist
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            plan = decoder._call_plan(1, size, size, window=window, pixel_window="same", pixel_chunk="auto",
                                      token_chunk="auto", keep_gate_features=None, max_memory=max_memory,
                                      cuda_graph=False)
            inputs = DecodeInputs(torch.zeros(1, cfg.lq_latent_channels, size // 32, size // 32), torch.zeros(1),
                                  torch.zeros(1, cfg.txt_max_length, cfg.txt_embed_dim), None,
                                  torch.zeros(1, 3, size, size), None)
            with torch.no_grad(), plan.autocast("cpu"):
                time_conds = decoder._time_conditions(times, 1, plan)
            with TensorMemoryTracker() as tracker:
                decoder._sample(inputs, settings, plan, time_conds, torch.Generator().manual_seed(0))
    finally:
        sampling.student_schedule, torch.Tensor.tolist = schedule, tolist
    return parameter_bytes(net) + tracker.peak, plan


def measure(args) -> None:
    if args.shapes_only:
        cfg = ARCHS[args.arch]
        for size in args.sizes:
            start = time.perf_counter()
            measured, plan = shapes_only_peak(cfg, size, args.precision, args.max_memory, args.steps, args.window)
            _print_row(args, cfg, size, "cpu (shapes only)", plan, measured, time.perf_counter() - start)
        return
    cfg = ARCHS[args.arch]
    device = torch.device(args.device)
    net = random_net(cfg, device=device)
    net = net.to(weights_dtype(args.precision))
    decoder = PidDecoder(net, precision=args.precision, caption_cache=None, fp8_emulation=True)
    cases = args.cases or [(size, args.max_memory) for size in args.sizes]
    for size, max_memory in cases:
        args.max_memory = max_memory  # of this case: _print_row reports it
        latent = torch.randn(1, cfg.lq_latent_channels, size // 32, size // 32, device=device)
        y = torch.zeros(1, cfg.txt_max_length, cfg.txt_embed_dim, device=device)
        kwargs = dict(caption_embeds=y, steps=args.steps, window=args.window, progress=False, max_memory=max_memory)
        if max_memory is None:
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
        plan = decoder._call_plan(1, size, size, window=args.window, pixel_window="same",
                                  pixel_chunk=kwargs.get("pixel_chunk", "auto"),
                                  token_chunk=kwargs.get("token_chunk", "auto"), keep_gate_features=None,
                                  max_memory=max_memory, cuda_graph=False)
        _print_row(args, cfg, size, str(device), plan, measured, seconds)


def _print_row(args, cfg, size: int, device: str, plan, measured: int, seconds: float) -> None:
    """One JSON line: the plan a decode ran, its measured peak and the estimate for that plan."""
    est = estimate_memory(cfg, size, size, 1, args.precision, plan.pixel_chunk, txt_len=cfg.txt_max_length,
                          token_chunk=plan.token_chunk, keep_gate_features=plan.keep_gate_features)
    print(json.dumps({"arch": args.arch, "size": size, "device": device, "precision": args.precision,
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
        q.add_argument("--precision", choices=PRECISIONS, default="fast")
        q.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[2048, 4096, 8192])
    q = sub.choices["estimates"]
    q.add_argument("--ranks", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    q.add_argument("--budgets", default="3.5GB,6GB,16GB", help="one per size")
    q = sub.choices["measure"]
    q.add_argument("--device", default="cpu")
    q.add_argument("--max-memory")
    q.add_argument("--cases", type=lambda s: [(int(c.split(":")[0]), c.split(":")[1]) for c in s.split(",")],
                   help="size:max_memory pairs, comma-separated (e.g. 2048:3.5GB,4096:6GB), instead of --sizes and "
                        "--max-memory: one network for all")
    q.add_argument("--pixel-chunk", type=int)
    q.add_argument("--token-chunk", type=int)
    q.add_argument("--window", type=int)
    q.add_argument("--steps", type=int, default=1)
    q.add_argument("--shapes-only", action="store_true", help="FakeTensorMode: sizes and lifetimes only (CPU)")
    args = p.parse_args()
    if not pid._extension.available():
        raise SystemExit(f"pid's kernels are not loaded: {pid._extension.LOAD_ERROR}")
    (estimates if args.what == "estimates" else measure)(args)


if __name__ == "__main__":
    main()
