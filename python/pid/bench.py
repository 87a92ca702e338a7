"""Timing and peak memory of whole decodes (`pid bench`, benchmarks/bench_decode.py): a checkpoint, or a named
architecture with random weights (pid.archs: timing does not need trained weights)."""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from .flops import decode_flops
from .memory import estimate_memory
from .memory import TensorMemoryTracker, parameter_bytes
from .timing import summary, time_calls

log = logging.getLogger(__name__)


def peak_bytes(fn: Callable[[], object], device: torch.device, weights: int) -> int:
    """A run's peak: `weights` plus what the run allocates above what was allocated before it (so other resident
    models don't count). CUDA: the caching allocator's peak; CPU: every tensor the run's ops create."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base + weights
    with TensorMemoryTracker() as tracker:
        fn()
    return weights + tracker.peak


def measure(run: Callable[[], object], device: torch.device, flop: float, repeats: int = 3, warmup: int = 1,
            weights: Optional[int] = None, before_memory_run: Optional[Callable[[], object]] = None) -> dict:
    """`run` timed after `warmup` untimed calls: median / min / max seconds and TFLOP/s for `flop`. With `weights`
    (bytes), also `peak_gib` of one more call (`before_memory_run` first, e.g. to drop a captured graph)."""
    out = summary(time_calls([run], device, repeats, warmup)[0])
    out["tflops_per_s"] = flop / out["median_s"] / 1e12
    if weights is not None:
        if before_memory_run is not None:
            before_memory_run()
        out["peak_gib"] = peak_bytes(run, device, weights) / 2**30
    return out


def bench_sizes(decoder, sizes: list[int], batch: int = 1, steps: int = 4, repeats: int = 3, warmup: int = 1,
                cuda_graph: bool = False, memory: bool = True, seed: int = 0, window: Optional[int] = None) -> list[dict]:
    """Times `decoder.decode` of random latents at each square output size; one dict per size: median / min / max
    seconds, TFLOP (pid.decode_flops) and TFLOP/s, measured and estimated peak GiB."""
    cfg, device = decoder.config, decoder.device
    rows = []
    for size in sizes:
        if size % cfg.pixels_per_latent:
            raise ValueError(f"size {size} must be a multiple of {cfg.pixels_per_latent} (pixels per latent cell)")
        gen = torch.Generator().manual_seed(seed + size)
        h = size // cfg.pixels_per_latent
        latent = torch.randn(batch, cfg.lq_latent_channels, h, h, generator=gen).to(device)
        y = torch.randn(batch, cfg.txt_max_length, cfg.txt_embed_dim, generator=gen).to(device)

        def run():
            return decoder.decode(latent, sigma=0.2, caption_embeds=y, steps=steps, seed=seed, progress=False,
                                  cuda_graph=cuda_graph, window=window)
        flop = decode_flops(cfg, size, size, steps) * batch
        row = {"size": size, "batch": batch, "tflop": flop / 1e12}
        row.update(measure(run, device, flop, repeats, warmup, parameter_bytes(decoder.net) if memory else None,
                           decoder.release_graphs if cuda_graph else None))  # graph: measure the capturing call
        row["estimate_gib"] = estimate_memory(cfg, size, size, batch, decoder.precision).peak / 2**30
        log.info("%d²: %.3f s", size, row["median_s"])
        rows.append(row)
    return rows


def format_rows(rows: list[dict], peak_tflops: Optional[float] = None) -> str:
    lines = [f"{'size':>6} {'median s':>9} {'min..max s':>15} {'TFLOP':>8} {'TFLOP/s':>8} {'x floor':>8} "
             f"{'peak GiB':>9} {'estimate':>9}"]
    for r in rows:
        floor = f"{r['median_s'] / (r['tflop'] / peak_tflops):.2f}" if peak_tflops else "-"
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
        lines.append(f"{r['size']:>6} {r['median_s']:9.3f} {r['min_s']:7.3f}..{r['max_s']:<7.3f} {r['tflop']:8.3g} "
                     f"{r['tflops_per_s']:8.2f} {floor:>8} {peak:>9} {r['estimate_gib']:9.2f}")
    return "\n".join(lines)
