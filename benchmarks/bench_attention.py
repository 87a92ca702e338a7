"""Benchmark pid attention: the compiled kernel vs torch SDPA (global), windowed vs global, and
qk_norm_rope vs its reference, in one process.

    python benchmarks/bench_attention.py [--device cpu|cuda] [--dtype bfloat16|float32] [--reps N]
                                         [--only SUBSTRING] [--json FILE]

Each row times a path and its baseline, alternating them rep by rep (so that load on the machine hits
both alike), and prints the median and interquartile range of each and the ratio baseline / path
(> 1: the path is faster). Absolute times mean something only with the device name, printed first.
Sizes: PiT attention over L patches (16 heads x 72); MMDiT joint attention over 300 text + L image tokens
(24 heads x 64); L = (H/16)^2 for an H x H output (1024: 512 px, 4096: 1K, 16384: 2K).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import pid.ops
from pid import _extension
from pid.nn.rope import rope_2d
from pid.ops import reference
from pid.timing import summary, time_calls


def _grid(L):
    side = int(round(L**0.5))
    assert side * side == L
    return side, side


# (name, kind, heads, head_dim, n_text, L, window). kind: "global" (kernel vs SDPA), "window" (windowed
# kernel vs global attention as pid runs it on the device: the kernel on CPU, torch SDPA on CUDA),
# "norm_rope" (qk_norm_rope kernel vs reference).
CASES = {
    "cpu": [
        ("PiT 512px global", "global", 16, 72, 0, 1024, None),
        ("MMDiT 512px global", "global", 24, 64, 300, 1024, None),
        ("PiT 1K global", "global", 16, 72, 0, 4096, None),
        ("PiT 1K w=32", "window", 16, 72, 0, 4096, 32),
        ("PiT 1K w=16", "window", 16, 72, 0, 4096, 16),
        ("PiT 1K w=8", "window", 16, 72, 0, 4096, 8),
        ("MMDiT 1K w=16", "window", 24, 64, 300, 4096, 16),
        ("norm+rope MMDiT 1K", "norm_rope", 24, 64, 0, 4096, None),
    ],
    "cuda": [
        ("PiT 1K global", "global", 16, 72, 0, 4096, None),
        ("PiT 2K global", "global", 16, 72, 0, 16384, None),
        ("MMDiT 2K global", "global", 24, 64, 300, 16384, None),
        ("PiT 2K w=32", "window", 16, 72, 0, 16384, 32),
        ("PiT 2K w=16", "window", 16, 72, 0, 16384, 16),
        ("MMDiT 2K w=32", "window", 24, 64, 300, 16384, 32),
        ("PiT 4K w=32", "window", 16, 72, 0, 65536, 32),
        ("MMDiT 4K w=32", "window", 24, 64, 300, 65536, 32),
        ("norm+rope MMDiT 2K", "norm_rope", 24, 64, 0, 16384, None),
    ],
}


def make_case(kind, H, d, n_text, L, window, dtype, device, g):
    r = lambda *s: torch.randn(*s, generator=g, device=device).to(dtype)  # noqa: E731
    grid = _grid(L)
    if kind == "norm_rope":
        qkv = r(1, L, 3 * H * d).view(1, L, 3, H, d)
        w = torch.ones(d, device=device)
        rope = tuple(t.to(device) for t in rope_2d(d, *grid))
        out_dtype = dtype
        return (
            lambda: pid.ops.qk_norm_rope(qkv, w, w, rope, out_dtype=out_dtype),
            lambda: reference.qk_norm_rope(qkv, w, w, rope, out_dtype=out_dtype),
            "reference",
        )
    S = n_text + L
    q, k, v = (r(1, H, S, d) for _ in range(3))
    kernel_global = lambda: torch.ops.pid.attention(q, k, v, 0, 0, 0, 0)  # noqa: E731
    if kind == "global":
        return kernel_global, lambda: F.scaled_dot_product_attention(q, k, v), "torch SDPA"
    windowed = lambda: torch.ops.pid.attention(q, k, v, window, grid[0], grid[1], n_text)  # noqa: E731
    if pid.ops.default_attention_backend(device) == "sdpa":
        return windowed, lambda: F.scaled_dot_product_attention(q, k, v), "global SDPA"
    return windowed, kernel_global, "global kernel"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--reps", type=int, default=None, help="timed calls per path (default: 10 CPU, 20 CUDA)")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if why := _extension.missing_kernels(a.device):
        raise SystemExit(f"pid: {why}")
    dev, dtype = a.device, getattr(torch, a.dtype)
    reps = a.reps or (10 if dev == "cpu" else 20)
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid attention, {a.dtype}, {name}, torch {torch.__version__}, {reps} reps (median, IQR)")
    print(f"{'case':<22} {'path ms':>10} {'(iqr)':>8}   {'baseline':<14} {'ms':>10} {'(iqr)':>8} {'ratio':>7}")
    rows = []
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.inference_mode():
        for case, kind, H, d, n_text, L, window in CASES[dev]:
            if a.only not in case or (dtype == torch.float32 and L > 16384):  # float32 SDPA at 4K: ~1 s a call
                continue
            fn, base, base_name = make_case(kind, H, d, n_text, L, window, dtype, dev, g)
            big = kind != "norm_rope" and dev == "cpu" and L >= 4096
            n = max(3, reps // 2) if big else reps
            path, ref = (summary(t) for t in time_calls([fn, base], dev, n, warmup=1 if big else 2))
            ratio = ref["median_s"] / path["median_s"]
            print(f"{case:<22} {path['median_s'] * 1e3:>10.2f} {path['iqr_s'] * 1e3:>8.2f}   {base_name:<14} "
                  f"{ref['median_s'] * 1e3:>10.2f} {ref['iqr_s'] * 1e3:>8.2f} {ratio:>6.2f}x", flush=True)
            rows.append({"case": case, "kind": kind, "heads": H, "head_dim": d, "n_text": n_text, "L": L,
                         "window": window, "reps": n, "path": path, "baseline": base_name, "baseline_times": ref,
                         "ratio": ratio})
    if a.json:
        meta = {"op": "pid attention", "device": name, "dtype": a.dtype, "torch": torch.__version__}
        with open(a.json, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
