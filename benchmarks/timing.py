"""Timing shared by the kernel benchmarks: one call in milliseconds (CUDA events on a GPU), and the median,
interquartile range and minimum of repeated calls."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def call_ms(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "iqr_ms": q[2] - q[0], "min_ms": min(times)}


def timed(fn: Callable[[], object], device: str, warmup: int = 3, reps: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    return stats([call_ms(fn, device) for _ in range(reps)])


def timed_pair(a: Callable[[], object], b: Callable[[], object], device: str, warmup: int = 3,
               reps: int = 20) -> tuple[dict[str, float], dict[str, float]]:
    """Both paths, calls interleaved so that both see the same machine load."""
    for _ in range(warmup):
        a()
        b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        times[0].append(call_ms(a, device))
        times[1].append(call_ms(b, device))
    return stats(times[0]), stats(times[1])
