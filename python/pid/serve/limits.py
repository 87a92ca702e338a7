"""The memory a server may use, decided from `pid.estimate_memory` before anything is allocated: which requests it
can never hold (413), and how many samples one batched decode may take."""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from ..memory import estimate_memory, parse_bytes, plan_for_budget
from ..errors import MemoryBudgetError
from .wire import WireError

log = logging.getLogger(__name__)


def device_capacity(device: torch.device) -> Optional[int]:
    """All the memory of `device`: a CUDA GPU's total, or the machine's RAM (capped by a container's memory limit);
    None where it cannot be known."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:  # cgroup v2
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return int(total)


class MemoryLimits:
    """A decoder's memory budget: `max_memory` (bytes or "6GB"; decodes are then planned to fit it, as
    `decode(max_memory=)` does), else all of the device's memory (`device_capacity`).

    `check_request`: a request whose decode does not fit the budget even fully split (pixel and token chunks, gate
    features made per step) can never be served: 413. `batch_fits`: a batched decode takes more samples only while
    its unsplit estimate fits (batching is for throughput; splitting costs it)."""

    def __init__(self, decoder, max_memory: "int | str | None" = None):
        self.config = decoder.config
        self.precision = decoder.precision
        self.max_memory = None if max_memory is None else parse_bytes(max_memory)
        self.budget = self.max_memory if self.max_memory is not None else device_capacity(decoder.device)

    def check_request(self, samples: int, height: int, width: int) -> None:
        """413 (WireError) unless a decode of `samples` images of height × width can fit the budget."""
        if self.budget is None:
            return
        try:
            plan_for_budget(self.config, height, width, samples, self.precision, self.budget)
        except MemoryBudgetError as e:
            which = "--max-memory" if self.max_memory is not None else "the device's memory"
            raise WireError(413, f"this server can never hold this decode ({which}): {e}") from None

    def batch_fits(self, samples: int, height: int, width: int) -> bool:
        """Whether `samples` images of height × width decode together unsplit within the budget."""
        if self.budget is None:
            return True
        return estimate_memory(self.config, height, width, samples, self.precision).peak <= self.budget
