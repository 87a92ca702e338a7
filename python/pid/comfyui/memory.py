"""A decode inside ComfyUI's memory: ComfyUI makes room and loads the weights, pid plans the decode for what is then
free (or for the budget the user set), a progress-bar step per sampler step and Cancel honoured between steps; on
out-of-memory the decode is planned once more for half the working memory, then stops with a clear error."""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

import comfy.model_management as mm
import comfy.utils

from .. import estimate_memory
from ..errors import MemoryBudgetError
from .model import PidModel

log = logging.getLogger(__name__)

GIB = 2.0**30
# run(max_memory, callback) -> images: one decode planned for max_memory bytes (weights included), reporting each
# sampler step to callback(step, steps, x)
Decode = Callable[[int, Callable[[int, int, torch.Tensor], None]], torch.Tensor]


class StepProgress:
    """The decode's per-step callback: one ComfyUI progress-bar update per sampler step, then Cancel checked (an
    InterruptProcessingException raised here stops the decode before its next step)."""

    def __init__(self) -> None:
        self.bar: Optional[comfy.utils.ProgressBar] = None

    def __call__(self, step: int, steps: int, x: torch.Tensor) -> None:
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(steps)
        self.bar.update_absolute(step + 1, steps)
        mm.throw_exception_if_processing_interrupted()


def is_out_of_memory(e: BaseException) -> bool:
    """A GPU out-of-memory (ComfyUI's test), or the CPU allocator failing."""
    return mm.is_oom(e) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def free_budget(model: PidModel, weights: int) -> int:
    """The budget when none is set: the weights, plus what ComfyUI says its device has free now that they are loaded,
    less the memory ComfyUI keeps in reserve for other programs."""
    device = model.patcher.load_device
    return int(weights + max(0, mm.get_free_memory(device) - mm.extra_reserved_memory()))


def decode_within_memory(model: PidModel, run: Decode, *, height: int, width: int, batch: int,
                         max_memory: Optional[int] = None) -> torch.Tensor:
    """Runs `run` for a decode of `batch` images of height × width: asks ComfyUI for room for the weights and the
    unsplit decode (it unloads other models as needed), plans for `max_memory` bytes (None: `free_budget`), and on
    out-of-memory plans once more for the weights plus half the working memory before giving up."""
    decoder = model.decoder
    whole = estimate_memory(decoder.config, height, width, batch, decoder.precision)  # nothing split
    model.load(memory_required=whole.peak - whole.weights)
    budget = int(max_memory) if max_memory else free_budget(model, whole.weights)
    log.info("PiD Decode: %d image(s) %dx%d, planned for %.2f GiB (%s); unsplit it needs %.2f GiB", batch, width,
             height, budget / GIB, "max_memory" if max_memory else "what ComfyUI has free", whole.peak / GIB)
    try:
        return run(budget, StepProgress())
    except MemoryBudgetError as e:  # planned before anything ran: nothing fits this budget, or the device
        source = "max_memory_gb" if max_memory else "what ComfyUI has free"
        raise MemoryBudgetError(f"PiD Decode cannot fit {budget / GIB:.2f} GiB ({source}): {e}") from None
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        first = e
    smaller = whole.weights + max(0, budget - whole.weights) // 2
    log.warning("PiD Decode ran out of memory planned for %.2f GiB (%s); planning again for %.2f GiB", budget / GIB,
                str(first).splitlines()[0], smaller / GIB)
    del first  # its traceback holds the failed attempt's tensors
    mm.soft_empty_cache()
    try:
        return run(smaller, StepProgress())
    except MemoryBudgetError as e:
        raise MemoryBudgetError(f"PiD Decode ran out of memory planned for {budget / GIB:.2f} GiB, and "
                                f"{smaller / GIB:.2f} GiB cannot be planned: {e}") from None
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise MemoryBudgetError(
            f"PiD Decode ran out of memory twice, planned for {budget / GIB:.2f} GiB and then {smaller / GIB:.2f} GiB "
            f"({str(e).splitlines()[0]}): set max_memory_gb below {smaller / GIB:.1f} (the decode is then split "
            "further), decode fewer images at once, or free the device for PiD (close other programs, start "
            "ComfyUI with --reserve-vram 0)") from None


__all__ = ["StepProgress", "decode_within_memory", "free_budget", "is_out_of_memory"]
