"""`pid selftest`: checks an install without downloading anything."""

from __future__ import annotations

import logging
import time
from typing import Optional

import torch

log = logging.getLogger(__name__)


def _check(ok: bool, what: str, detail: str = "") -> bool:
    (log.info if ok else log.error)("%s %s%s", "ok  " if ok else "FAIL", what, f" ({detail})" if detail else "")
    return ok


def _median_seconds(fn, args, repeats: int = 20) -> float:
    from .timing import summary, time_calls

    return summary(time_calls([lambda: fn(*args)], "cpu", repeats)[0])["median_s"]


def run_selftest(golden_dir: Optional[str] = None) -> bool:
    from . import _extension, golden, ops
    from .archs import TINY, random_net
    from .nn import PidNet

    results = []
    if _extension.available():
        results.append(_check(True, "compiled kernels loaded",
                              f"CPU kernels: {_extension.cpu_capability()} of {','.join(_extension.cpu_capabilities())}; "
                              f"CUDA kernels: {_extension.has_cuda_kernels()}"))
    else:
        results.append(_check(False, "compiled kernels loaded", f"using the PyTorch fallback: {_extension.LOAD_ERROR}"))

    gen = torch.Generator().manual_seed(0)
    x, lq = torch.randn(2, 37, 64, generator=gen), torch.randn(2, 37, 64, generator=gen)
    for width in (1, 64):
        args = (x, lq, torch.randn(2, 37, width, generator=gen), torch.randn(width, 64, generator=gen) * 0.1,
                torch.rand(2, generator=gen))
        err = (ops.sigma_gate(*args) - ops.reference.sigma_gate(*args)).abs().max().item()
        fast, ref = _median_seconds(ops.sigma_gate, args), _median_seconds(ops.reference.sigma_gate, args)
        results.append(_check(err < 1e-5, f"sigma_gate (width {width}) matches its reference",
                              f"max |diff| {err:.2e}; {fast * 1e6:.0f} us vs reference {ref * 1e6:.0f} us"))

    net = random_net(TINY)
    B, H, W = 2, 64, 96
    x = torch.randn(B, 3, H, W, generator=gen)
    t = torch.tensor([999.0, 634.0])
    y = torch.randn(B, 10, 32, generator=gen)
    latent = torch.randn(B, 16, H // 32, W // 32, generator=gen)
    sigma = torch.tensor([0.0, 0.4])
    with torch.no_grad():
        v = net(x, t, y, lq_latent=latent, degrade_sigma=sigma)
        cond = net.encode_condition(latent, sigma, (H // 16, W // 16))
        v_split = net.velocity(x, t, net.encode_text(y), cond)
    results.append(_check(bool(torch.isfinite(v).all()) and v.shape == x.shape, "tiny network forward",
                          f"output {tuple(v.shape)}"))
    results.append(_check(torch.equal(v, v_split), "encode_condition + velocity equals forward"))
    from .decoder import PidDecoder

    start = time.perf_counter()
    images = PidDecoder(net).decode(latent, sigma=sigma, caption_embeds=y, seed=0, progress=False)
    elapsed = time.perf_counter() - start
    results.append(_check(images.shape == (B, 3, H, W) and bool(images.abs().max() <= 1),
                          "tiny network decodes a synthetic latent (4-step student)",
                          f"{tuple(images.shape)} in {elapsed * 1000:.0f} ms"))

    folder = golden.find_golden_dir(*([golden_dir] if golden_dir else []))
    if folder is None:
        log.info("skip golden parity: no golden folder (set $PID_GOLDEN_DIR)")
    else:
        for case in golden.list_cases(folder, kind="net_forward"):
            ref_net = PidNet.from_reference_kwargs(case.meta["net_kwargs"])
            ref_net.load_state_dict(case.weights())
            e = golden.errors(golden.run_net_case(case, ref_net.eval()), case.io["output"], case.meta["output_max_abs"])
            results.append(_check(e["rel_l2"] <= 1e-5, f"golden {case.name}", f"relative error {e['rel_l2']:.1e}"))
    ok = all(results)
    (log.info if ok else log.error)("selftest %s: %d/%d checks passed", "passed" if ok else "FAILED", sum(results), len(results))
    return ok
