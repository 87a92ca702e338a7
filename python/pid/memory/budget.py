"""Fitting a decode into memory: planning it for a budget (`decode(max_memory=...)`, CLI `--max-memory`), choosing its
chunks from `decode`'s arguments, and refusing before it runs a decode the device cannot hold.

The trained function is never changed to fit: only how the work is split (pixel chunks, MMDiT token chunks, the gates'
latent features made at each step instead of kept). The least splitting whose estimated peak (`pid.estimate_memory`,
weights included) fits the budget is chosen; a budget nothing fits is an error that says what the smallest plan
needs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Optional

from ..config import PidConfig
from ..errors import MemoryBudgetError, PidError
from .estimate import MemoryEstimate, estimate_memory, pixel_chunk_for_budget
from .measure import available_bytes

log = logging.getLogger("pid.decoder")  # decode_chunks' message is a decode's, logged as before the split

# Chunk sizes tried, largest first (None: unchunked). Below ~256 tokens a chunk's matrix products get inefficient.
# The plan chosen is the one with the fewest steps down this list (see plan_for_budget) that fits.
CHUNKS = (None, 65536, 16384, 4096, 1024, 256)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def parse_bytes(value: "int | float | str") -> int:
    """A memory size: bytes as a number, or a string such as "6GB" (10^9), "5.5GiB" (2^30), "800MiB"."""
    if isinstance(value, bool):
        raise PidError(f"max_memory must be a number of bytes or a size such as '6GB' or '5.5GiB', got {value!r}")
    if isinstance(value, (int, float)):
        size = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        unit = {"k": "kb", "m": "mb", "g": "gb", "t": "tb"}.get(unit, unit)
        if m is None or unit not in _UNITS:
            raise PidError(f"max_memory {value!r}: a number of bytes or a size such as '6GB', '5.5GiB', '800MiB'")
        size = float(m.group(1)) * _UNITS[unit]
    if not 0 < size < float("inf"):
        raise PidError(f"max_memory must be a positive, finite size, got {value!r}")
    return int(size)


@dataclass(frozen=True)
class MemoryPlan:
    """How a decode splits its work, and the estimate of its peak that way."""

    pixel_chunk: Optional[int]
    token_chunk: Optional[int]
    keep_gate_features: bool
    estimate: MemoryEstimate


def plan_for_budget(cfg: PidConfig, height: int, width: int, batch: int, precision: str, budget: int, *,
                    pixel_chunk: "int | str | None" = "auto", token_chunk: "int | str | None" = "auto",
                    keep_gate_features: Optional[bool] = None, world_size: int = 1,
                    parallel: str = "sequence") -> MemoryPlan:
    """The least-split plan whose estimated peak fits `budget` bytes. A pixel_chunk / token_chunk given as a number
    (or None), and keep_gate_features given as True or False, are kept as given; "auto" / None are chosen here."""
    def estimate(pc, tc, keep):
        return estimate_memory(cfg, height, width, batch, precision, pc, token_chunk=tc, keep_gate_features=keep,
                               world_size=world_size, parallel=parallel)

    pixel_options = CHUNKS if pixel_chunk == "auto" else (pixel_chunk,)
    token_options = CHUNKS if token_chunk == "auto" else (token_chunk,)
    keep_options = (True, False) if keep_gate_features is None else (keep_gate_features,)
    # Least splitting first: fewest chunk-size steps down in all (pixel and token chunks counted alike, making the gate
    # features per step as one more step), then the fewer token-chunk steps (pixel chunks first).
    candidates = sorted(((pi + ti + (0 if keep else 1), ti, pc, tc, keep)
                         for pi, pc in enumerate(pixel_options) for ti, tc in enumerate(token_options)
                         for keep in keep_options), key=lambda c: c[:2])
    smallest = None
    for *_, pc, tc, keep in candidates:
        est = estimate(pc, tc, keep)
        if est.peak <= budget:
            return MemoryPlan(pc, tc, keep, est)
        if smallest is None or est.peak < smallest.estimate.peak:
            smallest = MemoryPlan(pc, tc, keep, est)
    gib = 2.0**30
    raise MemoryBudgetError(
        f"a {width}x{height} decode of {batch} image(s) needs at least {smallest.estimate.peak / gib:.2f} GiB "
        f"({smallest.estimate}; pixel_chunk={smallest.pixel_chunk}, token_chunk={smallest.token_chunk}, gate "
        f"features {'kept' if smallest.keep_gate_features else 'made at each step'}), more than max_memory "
        f"{budget / gib:.2f} GiB: raise max_memory, decode a smaller size or batch, or split the decode across "
        f"{'more ' if world_size > 1 else ''}GPUs (parallel='sequence')")


# ------------------------------------------------------------------------------------------- one decode
def decode_chunks(cfg: PidConfig, height: int, width: int, batch: int, precision: str, device, *,
                  pixel_chunk: "int | str | None", token_chunk: "int | str | None",
                  keep_gate_features: Optional[bool], max_memory: "int | str | None", world_size: int = 1,
                  parallel: str = "sequence") -> tuple[Optional[int], Optional[int], bool]:
    """(pixel_chunk, token_chunk, keep_gate_features) of one decode, from `decode`'s arguments: planned for
    `max_memory` when given (`plan_for_budget`; values given explicitly are kept), "auto" pixel chunks from the free
    GPU memory (none elsewhere), "auto" token chunks none."""
    for name, value in (("pixel_chunk", pixel_chunk), ("token_chunk", token_chunk)):
        if value not in ("auto", None) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise PidError(f"{name} must be a positive number of {'patches' if name == 'pixel_chunk' else 'tokens'}"
                           f", 'auto' or None, got {value!r}")
    if keep_gate_features not in (None, True, False):
        raise PidError(f"keep_gate_features must be True, False or None, got {keep_gate_features!r}")
    if max_memory is not None:
        planned = plan_for_budget(cfg, height, width, batch, precision, parse_bytes(max_memory),
                                  pixel_chunk=pixel_chunk, token_chunk=token_chunk,
                                  keep_gate_features=keep_gate_features, world_size=world_size, parallel=parallel)
        pixel_chunk, token_chunk = planned.pixel_chunk, planned.token_chunk
        keep_gate_features = planned.keep_gate_features
        log.info("max_memory %s: pixel_chunk %s, token_chunk %s, gate features %s; %s", max_memory, pixel_chunk,
                 token_chunk, "kept" if keep_gate_features else "made at each step", planned.estimate)
    if pixel_chunk == "auto":
        patches = batch * (height // cfg.patch_size) * (width // cfg.patch_size)
        pixel_chunk = _auto_pixel_chunk(cfg, precision, device, patches)
    if token_chunk == "auto":
        token_chunk = None
    return pixel_chunk, token_chunk, keep_gate_features is not False


def _auto_pixel_chunk(cfg: PidConfig, precision: str, device, patches: int) -> Optional[int]:
    """On CUDA, chunks whose pixel-stage work fits a quarter of the free memory; elsewhere none."""
    if device.type != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    chunk = pixel_chunk_for_budget(cfg, free // 4, precision)
    return None if chunk >= patches else chunk


def check_fits(cfg: PidConfig, height: int, width: int, batch: int, precision: str, device, *,
               pixel_chunk: Optional[int], token_chunk: Optional[int], keep_gate_features: bool, world_size: int = 1,
               parallel: str = "sequence") -> None:
    """MemoryBudgetError, with the options that fit, when a decode's estimated peak beyond the resident weights
    exceeds what `device` has free (`available_bytes`); nothing where that cannot be known."""
    free = available_bytes(device)
    if free is None:
        return

    def estimate(chunk):
        return estimate_memory(cfg, height, width, batch, precision, chunk, token_chunk=token_chunk,
                               keep_gate_features=keep_gate_features, world_size=world_size, parallel=parallel)

    est = estimate(pixel_chunk)
    need = est.peak - est.weights
    if need <= free:
        return
    gib = 2.0**30
    options = []
    if est.stage in ("pixel blocks", "final layer"):
        chunk = pixel_chunk_for_budget(cfg, free // 2, precision)
        chunked = estimate(chunk)
        if chunked.peak - chunked.weights <= free:
            options.append(f"pixel_chunk={chunk} (CLI --pixel-chunk {chunk}: "
                           f"{(chunked.peak - chunked.weights) / gib:.2f} GiB)")
    fits = f"{(est.weights + 0.9 * free) / gib:.1f}GiB"
    options.append(f"max_memory='{fits}' (CLI --max-memory {fits}: chunks planned to fit)")
    if batch > 1:
        options.append("a smaller batch")
    options += ["a smaller output size", "another device"]
    raise MemoryBudgetError(
        f"a {width}x{height} decode of {batch} image(s) needs about {need / gib:.2f} GiB beyond the weights "
        f"({est.stage} at its peak; pid.estimate_memory) but {device} has {free / gib:.2f} GiB free. "
        f"Options: {'; '.join(options)}; or check_memory=False (CLI --force) to try anyway")
