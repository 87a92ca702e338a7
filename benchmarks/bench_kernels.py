"""Every kernel family against its reference, one table: runs the per-family benchmarks (each times the
kernel and the eager PyTorch reference of the same op in one process, median and spread) and gathers
their ratios. CPU always; CUDA with --device cuda.

    python benchmarks/bench_kernels.py [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (family, script, extra arguments): float32 and bf16 operands where the kernel takes both.
RUNS = [  # the bfloat16 attention first: on a GPU it is the measurement that decides a default
    ("attention", "bench_attention.py", ["--dtype", "bfloat16"]),
    ("sigma_gate", "bench_sigma_gate.py", ["--dtype", "float32"]),
    ("sigma_gate", "bench_sigma_gate.py", ["--dtype", "bfloat16"]),
    ("sigma_gate", "bench_sigma_gate.py", ["--dtype", "mixed"]),
    ("norm_modulate", "bench_norm_modulate.py", ["--mods-dtype", "bfloat16"]),
    ("norm_modulate", "bench_norm_modulate.py", ["--mods-dtype", "float32"]),
    ("sampler_step", "bench_sampler_step.py", ["--v-dtype", "float32"]),
    ("sampler_step", "bench_sampler_step.py", ["--v-dtype", "bfloat16"]),
    ("attention", "bench_attention.py", ["--dtype", "float32"]),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--only", default="", help="run only the families whose name contains this")
    ap.add_argument("--json", help="write every family's results here")
    args = ap.parse_args(argv)
    summary, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, script, extra) in enumerate(RUNS):
            if args.only not in family:
                continue
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, str(HERE / script), "--device", args.device, *extra, "--json", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            print(proc.stdout, end="")
            if proc.returncode != 0 or not out.exists():
                failures.append(f"{script} {' '.join(extra)}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
                continue
            data = json.loads(out.read_text())
            for row in data["results"]:
                ratio = row.get("speedup", row.get("ratio"))
                kernel = row.get("kernel", row.get("path", {}))  # bench_attention names its timed path "path"
                summary.append({"family": family, "args": " ".join(extra), "case": row["case"], "ratio": ratio,
                                "kernel_ms": kernel["median_s"] * 1e3 if "median_s" in kernel else None,
                                "kernel_min_ms": kernel["min_s"] * 1e3 if "min_s" in kernel else None})
    print(f"\n{'family':14} {'operands':22} {'case':26} {'kernel ms':>10} {'kernel vs reference':>20}")
    for r in summary:
        ms = f"{r['kernel_ms']:10.3f}" if r["kernel_ms"] is not None else f"{'':10}"
        print(f"{r['family']:14} {r['args']:22} {r['case']:26} {ms} {r['ratio']:>19.2f}x")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "summary": summary}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
