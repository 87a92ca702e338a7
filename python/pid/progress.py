"""How a decode reports its steps: a progress bar (tqdm, on stderr) when stderr is a terminal, a debug log line per
step, the caller's `callback`, and one info line with the total time."""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch

log = logging.getLogger("pid.decoder")

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, steps, state after it), as pid.sampling's


class DecodeProgress:
    """The sampler callback of one decode. `close()` ends the bar; `finished()` logs the time of a decode that
    completed."""

    def __init__(self, name: str, steps: int, batch: int, height: int, width: int, bar: bool = True,
                 callback: Optional[StepCallback] = None):
        self.name, self.start, self.callback = name, time.perf_counter(), callback
        self.what = f"{batch} image(s) {width}x{height}"
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=f"pid {name}", unit="step", leave=False, disable=None)  # None: TTY only

    def __call__(self, step: int, total: int, x: torch.Tensor) -> None:
        log.debug("%s step %d/%d", self.name, step + 1, total)
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(step, total, x)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finished(self) -> None:
        log.info("decoded %s with the %s sampler in %.2f s", self.what, self.name, time.perf_counter() - self.start)
