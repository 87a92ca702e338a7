"""Global-attention back ends at the network's shapes, and windowed attention against them.

For each output size, the MMDiT joint attention (24 heads x 64 over 300 text + L image tokens) and the PiT patch
attention (16 heads x 72 over L patches), L = (size / 16)²: every back end that can take the inputs — pid's kernel,
torch SDPA, FlashAttention-4 (attention="fa4": flash-attn-4 on an sm90 / sm100 GPU) — timed interleaved (median ms,
TFLOP/s at 4·H·Sq·Sk·d FLOP) and checked against SDPA of the same inputs in float32 (relative L2). A back end that
cannot run says why. With --window w: pid's windowed kernel at --window-size against the fastest global back end
(the issue's target: w = 16 at 2048² at least 3x faster than global).

    python benchmarks/bench_attention_backends.py --device cuda --sizes 1024,2048,4096 --window 16 --json out.json
    python benchmarks/bench_attention_backends.py --device cpu --sizes 256 --window 4        # a dry run here
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from pid.ops import _flash4
from pid.ops._attention import _kernel, _kernel_can_run, _sdpa
from pid.timing import time_calls

SHAPES = (("MMDiT", 24, 64, 300), ("PiT", 16, 72, 0))  # (block, heads, head_dim, text tokens)


def backends(q, k, v) -> dict:
    """name -> (callable, None) where the back end takes these inputs, else (None, why)."""
    out = {"kernel": (lambda: _kernel(q, k, v, None, None, 0), None) if _kernel_can_run(q, k, v, True)
           else (None, "pid's kernel cannot take these inputs here"),
           "sdpa": (lambda: _sdpa(q, k, v), None)}
    why = _flash4.input_problem(q, k, v)
    out["fa4"] = (lambda: _flash4.attention(q, k, v), None) if why is None else (None, why)
    return out


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref).norm() / ref.norm()).item()


def time_all(fns: list, device: str, reps: int) -> list[float]:
    """Median seconds of each, timed interleaved after one warm-up call each (FA4 compiles its kernel at its
    first call of a configuration); fewer repetitions when one call takes long."""
    start = time.perf_counter()
    for fn in fns:
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    n = max(3, min(reps, int(reps * 0.5 / max(time.perf_counter() - start, 1e-6))))
    return [statistics.median(t) for t in time_calls(fns, torch.device(device), n, warmup=0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--sizes", default="1024,2048,4096", help="output sides (L = (size/16)² tokens)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--window", type=int, help="also time pid's windowed kernel with this w")
    ap.add_argument("--window-size", type=int, default=2048, help="the output side of the windowed comparison")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    dev, dtype = args.device, getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"attention back ends, {args.dtype}, {name}, torch {torch.__version__}", flush=True)
    print(f"{'shape':24} {'back end':8} {'ms':>9} {'TFLOP/s':>8} {'rel L2 vs fp32':>15}", flush=True)
    rows = []
    g = torch.Generator(device=dev).manual_seed(0)

    def write():
        if args.json:  # after every shape: a run stopped at its time cap keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": name, "dtype": args.dtype, "torch": torch.__version__, "rows": rows}, f,
                          indent=1)
    with torch.inference_mode():
        for size in [int(s) for s in args.sizes.split(",")]:
            side = size // 16
            for block, H, d, n_text in SHAPES:
                S = n_text + side * side
                q, k, v = (torch.randn(1, H, S, d, generator=g, device=dev).to(dtype) for _ in range(3))
                exact = _sdpa(q.float(), k.float(), v.float())
                flop = 4 * H * S * S * d
                label = f"{block} {size}² ({S} tok)"
                available = {b: fn for b, (fn, why) in backends(q, k, v).items() if fn is not None}
                for b, (fn, why) in backends(q, k, v).items():
                    if fn is None:
                        print(f"{label:24} {b:8} not run: {why}", flush=True)
                        rows.append({"shape": label, "backend": b, "skipped": why})
                errors = {b: rel_l2(fn(), exact) for b, fn in available.items()}
                for b, s in zip(available, time_all(list(available.values()), dev, args.reps)):
                    print(f"{label:24} {b:8} {s * 1e3:9.3f} {flop / s / 1e12:8.1f} {errors[b]:15.2e}", flush=True)
                    rows.append({"shape": label, "block": block, "size": size, "heads": H, "head_dim": d,
                                 "tokens": S, "backend": b, "median_ms": s * 1e3, "tflops_per_s": flop / s / 1e12,
                                 "rel_l2_vs_fp32": errors[b]})
                del exact
                write()
        if args.window:
            side = args.window_size // 16
            for block, H, d, n_text in SHAPES:
                S = n_text + side * side
                q, k, v = (torch.randn(1, H, S, d, generator=g, device=dev).to(dtype) for _ in range(3))
                window = lambda: torch.ops.pid.attention(q, k, v, args.window, side, side, n_text)  # noqa: E731
                available = {b: fn for b, (fn, why) in backends(q, k, v).items() if fn is not None}
                times = time_all([window, *available.values()], dev, args.reps)
                best = min(range(1, len(times)), key=times.__getitem__)
                best_name = list(available)[best - 1]
                label = f"{block} {args.window_size}² w={args.window}"
                print(f"{label:24} {'window':8} {times[0] * 1e3:9.3f}   vs global {best_name} {times[best] * 1e3:.3f} ms: "
                      f"windowed {times[best] / times[0]:.2f}x as fast", flush=True)
                rows.append({"shape": label, "backend": "pid windowed kernel", "window": args.window,
                             "median_ms": times[0] * 1e3, "global_backend": best_name,
                             "global_median_ms": times[best] * 1e3, "speedup_vs_global": times[best] / times[0]})
                write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
