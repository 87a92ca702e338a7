"""The dynamic batcher: a bounded queue of decode requests on the event loop, and one worker thread that owns the
decoder and runs one batched decode at a time.

Scheduling: the oldest waiting request opens the next batch, which takes every later request with the same batch key
(same latent grid and sampler setting) while the batch stays within `max_batch` samples and `fits` (the memory
estimate). A request that arrived while the device was idle and nothing waited starts at once; one that arrived
while the device was busy may wait for companions until `batch_wait` seconds after its arrival (or until its batch
is full), never longer. The queue holds at most `max_queue` waiting requests: one more is refused (`QueueFull`,
HTTP 503 with Retry-After). A request cancelled while it waits (its client disconnected, or it timed out) leaves the
queue and is never decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` waiting requests."""


class ShuttingDown(Exception):
    """The server stopped accepting requests (SIGTERM): the ones it holds are finished, no new one is taken."""


@dataclass(eq=False)
class Job:
    """A request waiting for (or in) a decode: its work, batch key, size in samples, and the future its handler
    awaits (set to the images, or to the exception)."""

    work: Any
    key: Hashable
    samples: int
    future: asyncio.Future
    arrival: float = field(default_factory=time.monotonic)
    device_was_busy: bool = False
    started: Optional[float] = None  # when its decode began


class Batcher:
    """`run(works)` (called on the worker thread with the batch's works) returns one result per work: a value or an
    exception. `fits(jobs)` says whether jobs may decode together (memory). Metrics are optional (ServeMetrics)."""

    def __init__(self, run: Callable[[list], list], *, max_batch: int = 4, max_queue: int = 16,
                 batch_wait: float = 0.005, fits: Optional[Callable[[list[Job]], bool]] = None, metrics=None,
                 executor: Optional[concurrent.futures.ThreadPoolExecutor] = None):
        if max_batch < 1 or max_queue < 0 or batch_wait < 0:
            raise ValueError(f"max_batch >= 1, max_queue >= 0, batch_wait >= 0; got {max_batch}, {max_queue}, "
                             f"{batch_wait}")
        self.run_batch = run
        self.max_batch, self.max_queue, self.batch_wait = max_batch, max_queue, batch_wait
        self.fits = fits or (lambda jobs: True)
        self.metrics = metrics
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pid-decode")
        self.pending: list[Job] = []
        self.busy = False
        self.closing = False
        self.batch_seconds = None  # moving average of a decode call's time: Retry-After
        self._changed: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None

    # ---- the handlers' side
    def submit(self, work: Any, key: Hashable, samples: int) -> Job:
        """Queue a request; QueueFull or ShuttingDown when it cannot be taken."""
        if self.closing:
            raise ShuttingDown("the server is shutting down and takes no new requests")
        if len(self.pending) >= self.max_queue and (self.busy or self.pending):  # it would wait: is there room?
            raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
        job = Job(work, key, samples, asyncio.get_running_loop().create_future(),
                  device_was_busy=self.busy or bool(self.pending))
        self.pending.append(job)
        self._update()
        return job

    def cancel(self, job: Job) -> bool:
        """Drop a request (client gone, timed out): True if it was still waiting, so it will never be decoded."""
        if not job.future.done():
            job.future.cancel()
        if job in self.pending:
            self.pending.remove(job)
            if self.metrics is not None:
                self.metrics.dropped.inc()
            self._update()
            return True
        return False

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to work through the queue (at least 1)."""
        per_batch = self.batch_seconds if self.batch_seconds is not None else 1.0
        return max(1, math.ceil(per_batch * (len(self.pending) / self.max_batch + 1)))

    # ---- the loop
    def start(self) -> None:
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pid-batcher")

    async def close(self) -> None:
        """Stop taking requests, finish the queued and running ones, stop the loop and the worker thread."""
        self.closing = True
        self._update()
        if self._task is not None:
            await self._task
        self.executor.shutdown(wait=True)

    def _update(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self.pending))
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self, timeout: Optional[float] = None) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _loop(self) -> None:
        while True:
            self.pending = [j for j in self.pending if not j.future.done()]
            if not self.pending:
                if self.closing:
                    return
                await self._wait_change()
                continue
            first = self.pending[0]
            if first.device_was_busy:  # gather companions until its deadline, or until the batch is full
                remaining = first.arrival + self.batch_wait - time.monotonic()
                if remaining > 0 and not self._batch_is_full(first):
                    await self._wait_change(remaining)
                    continue  # re-examine: the first may have been cancelled, more may have come
            batch = self._take(first)
            await self._run(batch)

    def _companions(self, first: Job) -> list[Job]:
        batch, samples = [first], first.samples
        for job in self.pending[1:]:
            if job.key != first.key or job.future.done() or samples + job.samples > self.max_batch:
                continue
            try:
                fits = self.fits(batch + [job])
            except Exception:  # the estimate failed: decode it apart (the loop must never stop)
                log.exception("pid serve: could not estimate a batch's memory; decoding the requests apart")
                fits = False
            if not fits:
                continue
            batch.append(job)
            samples += job.samples
        return batch

    def _batch_is_full(self, first: Job) -> bool:
        samples = sum(j.samples for j in self._companions(first))
        return samples >= self.max_batch

    def _take(self, first: Job) -> list[Job]:
        batch = self._companions(first)
        taken = set(map(id, batch))
        self.pending = [j for j in self.pending if id(j) not in taken]
        self._update()
        return batch

    async def _run(self, batch: list[Job]) -> None:
        self.busy = True
        start = time.monotonic()
        for job in batch:
            job.started = start
            if self.metrics is not None:
                self.metrics.queue_seconds.observe(start - job.arrival)
        if self.metrics is not None:
            self.metrics.batch_size.observe(sum(j.samples for j in batch))
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch,
                                                                       [j.work for j in batch])
        except Exception as e:  # run() reports per job; this is a failure of the call itself
            results = [e] * len(batch)
        finally:
            self.busy = False
        seconds = time.monotonic() - start
        self.batch_seconds = seconds if self.batch_seconds is None else 0.8 * self.batch_seconds + 0.2 * seconds
        if self.metrics is not None:
            self.metrics.decode_seconds.observe(seconds)
        for job, result in zip(batch, results):
            if job.future.done():  # its client left while it decoded
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
