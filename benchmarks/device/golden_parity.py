"""Golden networks on the GPU in float32 (no TF32), against the golden output and against a float64 run of the
same network: with pid's kernels, without them (PyTorch ops only), and with SDPA's math backend only. Tells
whether a gap to the golden comes from pid's kernels or from the GPU's float32 arithmetic.

    PID_GOLDEN_DIR=... python benchmarks/device/golden_parity.py [cuda|cpu]
"""

import contextlib
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pid import golden
from pid.nn import PidNet
from pid.plan import ExecutionPlan


def main() -> int:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    folder = golden.find_golden_dir(os.environ.get(golden.ENV_VAR, "../shared/golden"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    settings = {  # (plan, context)
        "pid kernels": (ExecutionPlan(), contextlib.nullcontext),
        "PyTorch ops only": (ExecutionPlan(kernels=False), contextlib.nullcontext),
        "kernels, SDPA math": (ExecutionPlan(), lambda: sdpa_kernel([SDPBackend.MATH])),
    }
    print(f"{'case':14} {'setting':20} {'rel_l2 vs golden':>17} {'max_abs_rel':>12} {'rel_l2 vs f64':>14}")
    for name in ("v1_net", "v15_net", "v15_flux2_net"):
        case = golden.GoldenCase(name, folder)
        net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
        net.load_state_dict(case.weights())
        io = {k: v.to(device) for k, v in case.io.items()}

        def run(dtype, plan=None):
            n = net.to(device, dtype)
            with torch.no_grad():
                return n(io["x"].to(dtype), io["t"], io["y"].to(dtype), lq_latent=io["lq_latent"].to(dtype),
                         degrade_sigma=io["degrade_sigma"], plan=plan).double().cpu()
        exact = run(torch.float64)
        ref = case.io["output"]
        for label, (plan, ctx) in settings.items():
            with ctx():
                out = run(torch.float32, plan)
            e = golden.errors(out, ref, case.meta["output_max_abs"])
            vs64 = ((out - exact).norm() / exact.norm()).item()
            print(f"{name:14} {label:20} {e['rel_l2']:17.2e} {e['max_abs_rel']:12.2e} {vs64:14.2e}")
        e = golden.errors(exact, ref, case.meta["output_max_abs"])
        print(f"{name:14} {'float64 (truth)':20} {e['rel_l2']:17.2e} {e['max_abs_rel']:12.2e} {'-':>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
