"""Timing of calls: one contract for `pid bench`, the benchmarks and the "auto" attention back end.

A call's time is the time it occupies the device, the device idle before it: on a GPU, CUDA events recorded
around the call after a synchronisation (so work queued earlier does not count, and host gaps inside the call
do); on the CPU, wall-clock time. Times are in seconds.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch


def call_seconds(fn: Callable[[], object], device: "str | torch.device") -> float:
    """Seconds one call of `fn` takes on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        stream = torch.cuda.current_stream(device)  # the stream the work on `device` runs on, current device or not
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_calls(fns: Sequence[Callable[[], object]], device: "str | torch.device", repeats: int,
               warmup: int = 0) -> list[list[float]]:
    """Seconds of `repeats` calls of each function, after `warmup` untimed calls of each. The functions' calls
    are interleaved (a, b, a, b, ...), so that every path sees the same machine load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            out.append(call_seconds(fn, device))
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    """Median, interquartile range, minimum and maximum of a list of times (seconds)."""
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "min_s": min(times), "max_s": max(times)}
