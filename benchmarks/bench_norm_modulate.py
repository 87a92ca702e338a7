"""Benchmark pid::rms_norm_modulate(_pixels) and pid::gated_residual: compiled kernel vs the eager PyTorch
reference of the same op (pid.ops.reference), in one process.

    python benchmarks/bench_norm_modulate.py [--device cpu|cuda] [--mods-dtype bfloat16|float32] [--json FILE]

The inputs have the network's dtypes: x is the float32 residual stream; shift/scale/gate and the branch
output y have --mods-dtype (bfloat16 under autocast, the reference regime; float32 in a float32 run).
Shift/scale/gate are chunk views of the adaLN output, read in place. "-> bf16" rows write bfloat16 for the
Linear that follows (what autocast would cast to); their reference is the op followed by .to(bfloat16).
Prints one row per case: median time and spread (interquartile range) of each path, and the ratio of the
medians; also the ratio of the minima, which is the robust one on a CPU shared with other work (a
preempted call costs a whole scheduler timeslice). Each path allocates its output (and the reference its
temporaries), as in the network. Absolute times mean something only together with the device name.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from pid import _extension
from pid.ops import reference
from pid.timing import summary, time_calls

EPS = 1e-6
# (name, kind, size 1, size 2, size 3): mmdit (B, L, D) with L = (H/16)^2 tokens, D = 1536 as in the
# released nets; pit (N patches, P = 256 pixels, c = 16 channels).
CASES = {
    "cpu": [
        ("mmdit 512px", "mmdit", 1, 1024, 1536),
        ("mmdit 512px ->bf16", "mmdit_bf16", 1, 1024, 1536),
        ("mmdit gated 512px", "mmdit_gated", 1, 1024, 1536),
        ("pit 512px", "pit", 1024, 256, 16),
        ("pit 512px ->bf16", "pit_bf16", 1024, 256, 16),
        ("pit gated 512px", "pit_gated", 1024, 256, 16),
    ],
    "cuda": [
        ("mmdit 1K", "mmdit", 1, 4096, 1536),
        ("mmdit 2K", "mmdit", 1, 16384, 1536),
        ("mmdit 2K ->bf16", "mmdit_bf16", 1, 16384, 1536),
        ("mmdit gated 2K", "mmdit_gated", 1, 16384, 1536),
        ("pit 1K", "pit", 4096, 256, 16),
        ("pit 2K", "pit", 16384, 256, 16),
        ("pit 2K ->bf16", "pit_bf16", 16384, 256, 16),
        ("pit gated 2K", "pit_gated", 16384, 256, 16),
    ],
}


def make_case(kind, s1, s2, s3, mods_dtype, dev, g):
    """(kernel fn, reference fn, args) for one case."""
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    if kind.startswith("mmdit"):
        B, L, D = s1, s2, s3
        x = r(B, L, D)
        mods = r(B, 1, 6 * D).to(mods_dtype)  # the adaLN output; chunks are views of it
        if kind == "mmdit_gated":
            return torch.ops.pid.gated_residual, reference.gated_residual, (x, mods[..., 2 * D : 3 * D], r(B, L, D).to(mods_dtype))
        out = torch.bfloat16 if kind == "mmdit_bf16" else None
        args = (x, 1 + 0.1 * r(D), mods[..., :D], mods[..., D : 2 * D], EPS, out)
        return torch.ops.pid.rms_norm_modulate, reference.rms_norm_modulate, args
    N, P, c = s1, s2, s3
    x = r(N, P, c)
    mods = r(N, P * 6 * c).to(mods_dtype).view(N, P, 6 * c)  # the per-pixel adaLN output
    if kind == "pit_gated":
        return torch.ops.pid.gated_residual, reference.gated_residual, (x, mods[..., 2 * c : 3 * c], r(N, P, c).to(mods_dtype))
    out = torch.bfloat16 if kind == "pit_bf16" else None
    args = (x, 1 + 0.1 * r(c), mods, 0, 1, EPS, out)
    return torch.ops.pid.rms_norm_modulate_pixels, reference.rms_norm_modulate_pixels, args


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--mods-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; the kernels use OpenMP's)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if why := _extension.missing_kernels(a.device):
        raise SystemExit(f"pid: {why}")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev, mods_dtype = a.device, getattr(torch, a.mods_dtype)
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid norm/modulate ops, x float32, mods {a.mods_dtype}, {name}, torch {torch.__version__}")
    print(f"{'case':<20} {'kernel ms':>10} {'(iqr)':>8} {'reference ms':>13} {'(iqr)':>8} {'speed-up':>9} {'(of min)':>9}")
    rows = []
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.inference_mode():
        for case, kind, s1, s2, s3 in CASES[dev]:
            kernel, ref_fn, args = make_case(kind, s1, s2, s3, mods_dtype, dev, g)
            k, ref = (summary(t) for t in time_calls([partial(kernel, *args), partial(ref_fn, *args)], dev, a.reps, 3))
            speedup, speedup_min = ref["median_s"] / k["median_s"], ref["min_s"] / k["min_s"]
            print(f"{case:<20} {k['median_s'] * 1e3:>10.3f} {k['iqr_s'] * 1e3:>8.3f} {ref['median_s'] * 1e3:>13.3f} {ref['iqr_s'] * 1e3:>8.3f} "
                  f"{speedup:>8.2f}x {speedup_min:>8.2f}x")
            rows.append({"case": case, "kind": kind, "sizes": [s1, s2, s3], "kernel": k, "reference": ref,
                         "speedup": speedup, "speedup_of_min": speedup_min})
            del args
    if a.json:
        meta = {"ops": "pid::rms_norm_modulate(_pixels), pid::gated_residual", "device": name, "reps": a.reps,
                "mods_dtype": a.mods_dtype, "torch": torch.__version__}
        with open(a.json, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
