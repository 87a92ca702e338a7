"""Benchmark pid.ops.sigma_gate (what the network calls) vs the PyTorch reference, in one process.

The face runs the fused kernel pid::sigma_gate for one logit per token (G = 1), and for one logit per
channel (G = D, a [B·L, D] x [D, D] GEMM) BLAS / cuBLAS addmm followed by the fused epilogue
pid::sigma_gate_apply. Per channel, a second row times the op torch.ops.pid.sigma_gate called directly (on CUDA
with bfloat16 weights: the tensor-core GEMM with the gate in its epilogue) against the same reference: what the
face should call is decided from these rows.

    python benchmarks/bench_sigma_gate.py [--device cpu|cuda] [--dtype bfloat16|float32|mixed] [--json FILE]

--dtype mixed: x float32, lq / lq_logit / w_x bfloat16 (the fast path's gates). Its per-channel rows use
logit_dtype=bfloat16, as the fast path calls them (the face's and the reference's GEMM in bfloat16, as the official
Linear; the op itself is float32).

Prints one row per case: median time and spread (interquartile range) of each path, calls of the two paths
interleaved so that both see the same machine load, and the ratio.
Absolute times mean something only together with the device name, which is printed first.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

import pid.ops
from pid import _extension
from pid.ops import reference
from pid.timing import summary, time_calls

# (name, B, L, D, per_dim). L = (H/16)^2 tokens for an H x H output; D = 1536 as in the released nets.
CASES = {
    "cpu": [("per_token 512px", 1, 1024, 1536, False), ("per_dim 512px", 1, 1024, 1536, True)],
    "cuda": [
        ("per_token 1K", 1, 4096, 1536, False),
        ("per_token 2K", 1, 16384, 1536, False),
        ("per_dim 1K", 1, 4096, 1536, True),
        ("per_dim 2K", 1, 16384, 1536, True),
    ],
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "mixed"])
    p.add_argument("--reps", type=int, default=50, help="timed calls per path, interleaved (default 50)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if why := _extension.missing_kernels(a.device):
        raise SystemExit(f"pid: {why}")
    dev = a.device
    x_dtype, dtype = (torch.float32, torch.bfloat16) if a.dtype == "mixed" else (getattr(torch, a.dtype),) * 2
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid.ops.sigma_gate, {a.dtype}, {name}, torch {torch.__version__}")
    print(f"{'case':<16} {'kernel ms':>10} {'(iqr)':>8} {'reference ms':>13} {'(iqr)':>8} {'speed-up':>9}")
    rows = []
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.inference_mode():
        for case, B, L, D, per_dim in CASES[dev]:
            G = D if per_dim else 1
            r = lambda *s: torch.randn(*s, generator=g, device=dev).to(dtype)  # noqa: E731
            x = torch.randn(B, L, D, generator=g, device=dev).to(x_dtype)
            args = (x, r(B, L, D), r(B, L, G), r(G, D) / D**0.5, torch.rand(B, generator=g, device=dev))
            logit_dtype = torch.bfloat16 if a.dtype == "mixed" else torch.float32  # as the fast path calls them
            paths = [(case, partial(pid.ops.sigma_gate, *args, logit_dtype=logit_dtype))]
            if per_dim:
                paths.append((f"  op {case.split()[-1]}", partial(torch.ops.pid.sigma_gate, *args)))
            ref_fn = partial(reference.sigma_gate, *args, logit_dtype)
            for label, fn in paths:
                k, ref = (summary(t) for t in time_calls([fn, ref_fn], dev, a.reps, 3))
                speedup = ref["median_s"] / k["median_s"]
                print(f"{label:<16} {k['median_s'] * 1e3:>10.3f} {k['iqr_s'] * 1e3:>8.3f} {ref['median_s'] * 1e3:>13.3f} "
                      f"{ref['iqr_s'] * 1e3:>8.3f} {speedup:>8.2f}x")
                rows.append({"case": label, "B": B, "L": L, "D": D, "G": G, "kernel": k, "reference": ref,
                             "speedup": speedup})
    if a.json:
        meta = {"op": "pid.ops.sigma_gate", "device": name, "dtype": a.dtype, "torch": torch.__version__}
        with open(a.json, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
