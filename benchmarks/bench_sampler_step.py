"""Benchmark the fused sampler steps vs the eager PyTorch expressions they replace, in one process.

    python benchmarks/bench_sampler_step.py [--device cpu|cuda] [--v-dtype float32|bfloat16]
                                            [--shape 1 3 2048 2048] [--reps N] [--json FILE]

One row per step kind: median time and spread (interquartile range) of the compiled kernel
(torch.ops.pid.*) and of the eager reference (pid.ops.reference, the arithmetic sampling.py used before
the kernels), and the ratio. Absolute times mean something only together with the device name, which is
printed first.
"""

from __future__ import annotations

import argparse
import json

import torch

from pid import _extension
from pid.ops import reference
from pid.timing import summary, time_calls

# DPM scalars of a mid-schedule second-order step (any float32 values time the same).
K = dict(t=0.9, t_ratio=0.95, alpha_phi=-0.04, half_alpha_phi=-0.02, inv_r=1.3)


def cases(x, eps, d_prev, v_c, v_u):
    k = K
    kargs = (k["t"], k["t_ratio"], k["alpha_phi"], k["half_alpha_phi"], k["inv_r"])
    return [
        ("student step (SDE)", lambda: torch.ops.pid.student_step(x, v_c, eps, 0.866, 0.634),
         lambda: reference.student_step(x, v_c, eps, 0.866, 0.634)),
        ("student last step", lambda: torch.ops.pid.student_step(x, v_c, None, 0.342, 0.0),
         lambda: reference.student_step(x, v_c, None, 0.342, 0.0)),
        ("dpm step, order 1", lambda: torch.ops.pid.dpm_step(x, v_c, None, None, 1.0, *kargs),
         lambda: reference.dpm_step(x, v_c, None, None, 1.0, *kargs)),
        ("dpm step, order 2", lambda: torch.ops.pid.dpm_step(x, v_c, None, d_prev, 1.0, *kargs),
         lambda: reference.dpm_step(x, v_c, None, d_prev, 1.0, *kargs)),
        ("dpm step, 2 + CFG", lambda: torch.ops.pid.dpm_step(x, v_c, v_u, d_prev, 4.5, *kargs),
         lambda: reference.dpm_step(x, v_c, v_u, d_prev, 4.5, *kargs)),
        ("dpm final (D only)", lambda: torch.ops.pid.dpm_data_prediction(x, v_c, v_u, 4.5, 0.3),
         lambda: reference.dpm_data_prediction(x, v_c, v_u, 4.5, 0.3)),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--v-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of the network output v (x, eps, D are float32)")
    p.add_argument("--shape", type=int, nargs="+", default=[1, 3, 2048, 2048])
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10 on CPU, 50 on CUDA)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if why := _extension.missing_kernels(a.device):
        raise SystemExit(f"pid: {why}")
    dev, v_dtype = a.device, getattr(torch, a.v_dtype)
    reps = a.reps or (50 if dev == "cuda" else 10)
    warmup = 5 if dev == "cuda" else 2
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    shape = tuple(a.shape)
    print(f"pid sampler steps, x {list(shape)} float32, v {a.v_dtype}, {name}, torch {torch.__version__}")
    print(f"{'step':<20} {'kernel ms':>10} {'(iqr)':>8} {'eager ms':>10} {'(iqr)':>8} {'speed-up':>9}")
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda: torch.randn(shape, generator=g, device=dev)  # noqa: E731
    x, eps, d_prev = r(), r(), r()
    v_c, v_u = r().to(v_dtype), r().to(v_dtype)
    rows = []
    with torch.inference_mode():
        for case, kernel, eager in cases(x, eps, d_prev, v_c, v_u):
            k, ref = (summary(t) for t in time_calls([kernel, eager], dev, reps, warmup))
            speedup = ref["median_s"] / k["median_s"]
            print(f"{case:<20} {k['median_s'] * 1e3:>10.3f} {k['iqr_s'] * 1e3:>8.3f} {ref['median_s'] * 1e3:>10.3f} "
                  f"{ref['iqr_s'] * 1e3:>8.3f} {speedup:>8.2f}x")
            rows.append({"case": case, "kernel": k, "eager": ref, "speedup": speedup})
    if a.json:
        meta = {"op": "pid sampler steps", "device": name, "shape": list(shape), "v_dtype": a.v_dtype,
                "torch": torch.__version__}
        with open(a.json, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
