"""Measuring a precision regime against another on your own checkpoint and latents (`pid compare`): the same
latent, caption and noise decoded in each regime, and how far each lands from the baseline (PSNR, largest
difference) and how long it took. What the golden networks say about the regimes does not characterise trained
weights; this measures them."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from .plan import PRECISIONS
from .timing import call_seconds


def psnr(images: torch.Tensor, baseline: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2) against a baseline; inf when identical."""
    mse = (images.double() - baseline.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def compare_precisions(checkpoint: Any, latent: torch.Tensor, precisions: Sequence[str], *, against: str = "reference",
                       load_kwargs: Optional[dict] = None, seed: int = 0, **decode_kwargs) -> list[dict]:
    """Decode `latent` in `against` and in each of `precisions`, from the same checkpoint (loaded once per regime),
    with the same noise (`seed`) and decode keywords; one dict per regime: precision, seconds (of a decode after an
    untimed one, so that no regime pays the start-up), PSNR (dB) and max |difference| against the baseline (the
    baseline's own row first)."""
    from .decode import load

    for p in (against, *precisions):
        if p not in PRECISIONS:
            from .errors import PidError

            raise PidError(f"precision must be one of {PRECISIONS}, got {p!r}")
    rows, baseline = [], None
    for precision in (against, *[p for p in precisions if p != against]):
        images, seconds = _decode_in(load(checkpoint, precision=precision, **(load_kwargs or {})), latent, seed,
                                     decode_kwargs)
        if baseline is None:
            baseline = images
        rows.append({"precision": precision, "seconds": seconds, "psnr_db": psnr(images, baseline),
                     "max_abs_diff": (images - baseline).abs().max().item()})
    return rows


def _decode_in(decoder, latent: torch.Tensor, seed: int, decode_kwargs: dict) -> tuple[torch.Tensor, float]:
    """One decode (its images on the CPU, in float32) and its seconds; the decoder is dropped afterwards."""
    out: dict[str, torch.Tensor] = {}

    def run():
        out["images"] = decoder.decode(latent, seed=seed, progress=False, **decode_kwargs)
    run()  # untimed: kernels' first launches, library workspaces, attention="auto" timings
    seconds = call_seconds(run, decoder.device)
    return out["images"].float().cpu(), seconds
