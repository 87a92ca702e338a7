"""`create_app(decoder, ...)`: the decode service as an ASGI app (Starlette), for `pid serve`, uvicorn, Ray Serve or
any ASGI server.

Routes: `POST /` and `POST /decode` (the Remote VAE decode protocol of diffusers' `remote_decode`), `POST /v1/decode`
(pid's native form: a safetensors body), `GET /health` (503 until the weights are loaded and a warm-up decode ran),
`GET /metrics` (Prometheus text), `GET /info`. Errors are JSON {"error": "..."}: 400 bad input, 413 a request the
server can never hold, 503 (with Retry-After) queue full / loading / shutting down, 504 past the timeout.

The event loop only parses, queues and answers: the decoder belongs to one worker thread (loading, the warm-up and
every decode run there) and replies are encoded on a small thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from typing import Callable, Optional, Union

import torch

from ..errors import MemoryBudgetError, NonFiniteOutputError, PidError, one_line
from ..memory import OutOfMemoryError
from . import native, replies, wire
from .extras import require_serve_extra
from .batch_decode import DecodeJob, decode_jobs
from .batcher import Batcher, QueueFull, ShuttingDown
from .limits import MemoryLimits
from .metrics import ServeMetrics
from .wire import WireError

log = logging.getLogger(__name__)

MAX_NATIVE_BODY = 256 * 2**20  # a /v1/decode body: latents and caption embeddings (2.7 MB per caption)


class DecodeService:
    """The state behind the routes: the decoder (once loaded), its batcher, limits and metrics."""

    def __init__(self, decoder, *, max_batch: int, max_queue: int, max_memory, batch_wait_ms: float, timeout: float,
                 caption_embeds, warmup: bool, encode_threads: int):
        if max_batch < 1 or max_queue < 0 or batch_wait_ms < 0 or not timeout > 0 or encode_threads < 1:
            raise PidError(f"max_batch >= 1, max_queue >= 0, batch_wait_ms >= 0, timeout > 0 and encode_threads >= 1, "
                           f"got {max_batch}, {max_queue}, {batch_wait_ms}, {timeout}, {encode_threads}")
        if max_memory is not None:
            from ..memory import parse_bytes

            max_memory = parse_bytes(max_memory)
        self._source = decoder  # a PidDecoder, or a callable that loads one (on the worker thread)
        self.decoder = None
        self.max_batch, self.timeout, self.max_memory = max_batch, float(timeout), max_memory
        self.warmup = warmup
        self._embeds_arg = caption_embeds
        self.default_embeds: Optional[torch.Tensor] = None
        self.limits: Optional[MemoryLimits] = None
        self.metrics = ServeMetrics()
        self.batcher = Batcher(self._decode, max_batch=max_batch, max_queue=max_queue,
                               batch_wait=batch_wait_ms / 1000, fits=self._fits, metrics=self.metrics)
        self.encoder_pool = concurrent.futures.ThreadPoolExecutor(encode_threads, thread_name_prefix="pid-encode")
        self.ready = False
        self.error: Optional[str] = None
        self._startup: Optional[asyncio.Task] = None

    # ---- lifecycle
    async def start(self, wait_ready: bool = False) -> None:
        """Starts the batcher and, in the background, loading and the warm-up (`wait_ready`: waits for them, and
        raises if the decoder cannot start)."""
        self.batcher.start()
        self._startup = asyncio.get_running_loop().create_task(self._load_and_warm_up(), name="pid-startup")
        if wait_ready:
            await self._startup
            if self.error is not None:
                raise RuntimeError(self.error)

    async def stop(self) -> None:
        """After the server stopped taking connections: finish what is queued and running, then stop the threads."""
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._startup
        await self.batcher.close()
        self.encoder_pool.shutdown(wait=True)

    async def _load_and_warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            start = time.monotonic()
            decoder = self._source
            if not hasattr(decoder, "decode"):
                decoder = await loop.run_in_executor(self.batcher.executor, decoder)
            self.decoder = decoder
            self.limits = MemoryLimits(decoder, self.max_memory)
            self.default_embeds = self._read_default_embeds()
            if self.warmup:
                await loop.run_in_executor(self.batcher.executor, self._warm_up)
            self.ready = True
            self.metrics.ready.set(1)
            log.info("pid serve: ready in %.1f s (%r, max batch %d, memory budget %s)", time.monotonic() - start,
                     decoder, self.max_batch, _gib(self.limits.budget))
        except Exception as e:  # the server stays up and says why in /health and every reply
            self.error = f"the decoder failed to start: {one_line(e)}"
            log.error("pid serve: %s", self.error, exc_info=not isinstance(e, (PidError, OSError, ImportError)))

    def _read_default_embeds(self) -> Optional[torch.Tensor]:
        from ..captions import check_embeds, load_caption_embeds

        embeds = self._embeds_arg
        if embeds is None:
            return None
        if not isinstance(embeds, torch.Tensor):
            embeds = load_caption_embeds(embeds, dim=None, txt_len=None)[0]
        embeds = check_embeds(embeds, "the default caption embeddings", dim=self.decoder.config.txt_embed_dim,
                              txt_len=None)
        if embeds.shape[0] != 1:
            raise PidError(f"the default caption embeddings hold {embeds.shape[0]} captions; give one ([L, D] or "
                           "[1, L, D])")
        return embeds.float()

    def _warm_up(self) -> None:
        """One small decode with the default caption (which puts it in the caption cache), off the event loop."""
        cfg = self.decoder.config
        space = self.decoder.latent_space
        h, w = space.fixed_grid if space is not None and space.fixed_grid else (2, 2)
        job = DecodeJob(torch.zeros(1, cfg.lq_latent_channels, h, w), [0.0])
        quiet = logging.getLogger("pid.decoder")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # no "outside the trained sizes" warning for the warm-up's tiny image
        try:
            (result,) = decode_jobs(self.decoder, [job], default_embeds=self.default_embeds,
                                    max_memory=self.max_memory)
        finally:
            quiet.setLevel(level)
        if isinstance(result, BaseException):
            raise result

    # ---- the worker thread
    def _decode(self, jobs: list[DecodeJob]) -> list:
        results = decode_jobs(self.decoder, jobs, default_embeds=self.default_embeds, max_memory=self.max_memory)
        self.metrics.record_memory(self.decoder.device)
        return results

    def _fits(self, jobs) -> bool:
        _, _, h, w = jobs[0].work.latent.shape
        height, width = self.decoder.config.output_size(h, w)
        return self.limits.batch_fits(sum(j.samples for j in jobs), height, width)

    # ---- requests
    def check_ready(self) -> None:
        if self.error is not None:
            raise WireError(503, self.error)
        if not self.ready:
            raise WireError(503, "the decoder is still loading (GET /health says when it is ready)",
                            {"Retry-After": "5"})

    def check_size(self, samples: int, h: int, w: int) -> None:
        """413 for a request the server can never hold: more samples than --max-batch, or a decode over the memory
        budget even fully split. Before its body is read."""
        if samples > self.max_batch:
            raise WireError(413, f"the latent holds {samples} samples; this server decodes at most {self.max_batch} "
                                 "at once (--max-batch): send fewer per request")
        height, width = self.decoder.config.output_size(h, w)
        self.limits.check_request(samples, height, width)

    async def parse_remote(self, request) -> tuple[DecodeJob, replies.ReplyFormat]:
        req = wire.parse_remote_query(request.query_params.multi_items())
        channels, space = self.decoder.config.lq_latent_channels, self.decoder.latent_space
        vae_factor = space.vae_factor if space is not None else self.decoder.config.latent_spatial_down_factor
        B, _, h, w = req.grid_shape(channels, vae_factor)
        self.check_size(B, h, w)
        body = await wire.read_body(request, req.body_bytes, exact=True)
        latent = req.latent(body, channels, vae_factor, space)
        return DecodeJob(latent, req.options.sigmas(B), req.options.seed, req.options.steps,
                         req.options.caption), req.reply

    async def parse_native(self, request) -> tuple[DecodeJob, replies.ReplyFormat]:
        options, latent_format = native.parse_native_query(request.query_params.multi_items())
        reply = native.native_reply_format(request.headers.get("accept"))
        body = await wire.read_body(request, MAX_NATIVE_BODY, exact=False)
        shape = native.safetensors_shape(body, "latent")
        if shape is not None and len(shape) in (3, 4):
            B, h, w = (1, *shape[1:]) if len(shape) == 3 else (shape[0], *shape[2:])
            self.check_size(B, h, w)  # before the tensors are read
        cfg = self.decoder.config
        parsed = native.parse_native_body(body, options, latent_format, cfg.lq_latent_channels,
                                        self.decoder.latent_space, cfg.txt_embed_dim)
        B, _, h, w = parsed.latent.shape
        self.check_size(B, h, w)
        if reply.single_image and B != 1:
            raise wire.bad(f"an image/{reply.kind} reply holds one image, the latent holds {B}: ask for "
                           f"{replies.SAFETENSORS_TYPE}, or send one latent per request")
        o = parsed.options
        return DecodeJob(parsed.latent, o.sigmas(B), o.seed, o.steps, o.caption, parsed.caption_embeds), reply

    async def handle(self, request, endpoint: str, parse):
        """One decode request: parse it, queue it, wait for its images, encode the reply. Every outcome is a response
        (the reply, or a JSON error) and is counted in the metrics."""
        from starlette.responses import Response

        start = time.monotonic()
        status = 200
        try:
            self.check_ready()
            work, reply = await parse(request)
            try:
                job = self.batcher.submit(work, work.batch_key(), work.samples)
            except (QueueFull, ShuttingDown) as e:
                raise WireError(503, f"{e}: retry later", {"Retry-After": str(self.batcher.retry_after())}) from None
            images = await self._wait(job, request, start)
            encode_start = time.monotonic()
            body, media_type, headers = await asyncio.get_running_loop().run_in_executor(
                self.encoder_pool, replies.encode_reply, images, reply)
            self.metrics.encode_seconds.observe(time.monotonic() - encode_start)
            self.metrics.images.inc(images.shape[0])
            response = Response(body, 200, headers=headers, media_type=media_type)
        except WireError as e:
            status, response = e.status, replies.error_response(e.status, e.message, e.headers)
        except wire.ClientGone:
            status, response = 499, replies.error_response(499, "the client disconnected")
        except asyncio.CancelledError:  # the host dropped the request: counted as the client gone
            self.metrics.requests.labels(endpoint, "499").inc()
            raise
        except Exception as e:
            status, message, headers = _decode_failure(e, self.batcher.retry_after())
            response = replies.error_response(status, message, headers)
        self.metrics.requests.labels(endpoint, str(status)).inc()
        return response

    async def _wait(self, job, request, start: float) -> torch.Tensor:
        """The job's images, or ClientGone / 504; either way a job that has not started is never decoded."""
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({job.future, gone}, timeout=max(0.0, start + self.timeout - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the host dropped the request (e.g. Ray Serve on a disconnect): so do we
            self.batcher.cancel(job)
            raise
        finally:
            gone.cancel()
        if job.future.done() and not job.future.cancelled():
            return job.future.result()
        self.batcher.cancel(job)
        if gone in done:
            raise wire.ClientGone()
        raise WireError(504, f"no reply within {self.timeout:g} s (the server's --timeout, queue and decode "
                             "together): it is overloaded, or the decode is too large for it")

    # ---- health
    def health(self) -> tuple[int, dict, dict]:
        if self.error is not None:
            return 503, {"error": self.error}, {}
        if not self.ready:
            return 503, {"status": "loading"}, {"Retry-After": "5"}
        return 200, {"status": "ok"}, {}

    def info(self) -> dict:
        out = {"ready": self.ready, "max_batch": self.max_batch, "max_queue": self.batcher.max_queue,
               "batch_wait_ms": self.batcher.batch_wait * 1000, "timeout": self.timeout,
               "max_memory": self.max_memory}
        if self.decoder is not None:
            out.update(decoder=self.decoder.info(), memory_budget=self.limits.budget if self.limits else None,
                       default_caption="--caption-embeds" if self.default_embeds is not None else "\"\"")
        return out


def create_app(decoder: "Union[object, Callable[[], object]]", *, max_batch: int = 4, max_queue: int = 16,
               max_memory: "int | str | None" = None, batch_wait_ms: float = 5.0, timeout: float = 300.0,
               caption_embeds: "torch.Tensor | str | None" = None, warmup: bool = True, encode_threads: int = 2,
               wait_ready: bool = False):
    """The decode service as a Starlette ASGI app.

    decoder: a `PidDecoder`, or a function that loads one (called on the decoder's worker thread once the app starts,
    so /health answers 503 while the weights load). max_batch: samples per decode call (and per request).
    max_queue: requests waiting beyond the running decode (one more gets 503 + Retry-After). max_memory: the memory
    budget (bytes or "6GB") that decodes are planned for and batches capped by (default: all of the device's memory;
    a request beyond it gets 413). batch_wait_ms: how long a request that found the device busy may wait for
    companions. timeout: seconds a request may take, queue and decode together (504 after). caption_embeds: the
    caption of requests that bring none ([L, D] / [1, L, D] tensor or a file; default: the empty caption through the
    caption cache, which needs Gemma once). warmup: a small decode before /health says ready. wait_ready: the app's
    startup (ASGI lifespan) waits until the decoder is loaded and warm, and fails if it cannot start (Ray Serve: a
    replica takes traffic only once ready); by default startup returns at once and /health says 503 meanwhile."""
    require_serve_extra()
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    service = DecodeService(decoder, max_batch=max_batch, max_queue=max_queue, max_memory=max_memory,
                            batch_wait_ms=batch_wait_ms, timeout=timeout, caption_embeds=caption_embeds,
                            warmup=warmup, encode_threads=encode_threads)

    async def remote(request):
        return await service.handle(request, "remote", service.parse_remote)

    async def native(request):
        return await service.handle(request, "native", service.parse_native)

    async def health(request):
        status, body, headers = service.health()
        return JSONResponse(body, status, headers=headers)

    async def metrics(request):
        if service.decoder is not None:
            service.metrics.record_memory(service.decoder.device)
        body, media_type = service.metrics.exposition()
        return Response(body, media_type=media_type)

    async def info(request):
        return JSONResponse(service.info())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            await service.start(wait_ready)
            yield
        finally:
            await service.stop()

    app = Starlette(routes=[Route("/", remote, methods=["POST"]), Route("/decode", remote, methods=["POST"]),
                            Route("/v1/decode", native, methods=["POST"]), Route("/health", health, methods=["GET"]),
                            Route("/metrics", metrics, methods=["GET"]), Route("/info", info, methods=["GET"])],
                    lifespan=lifespan)
    app.state.service = service
    return app


# ---------------------------------------------------------------------------------------------- helpers
async def _disconnected(receive) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _decode_failure(e: BaseException, retry_after: int) -> tuple[int, str, dict]:
    """(status, message, headers) of a decode that raised."""
    if isinstance(e, (MemoryBudgetError, OutOfMemoryError)):
        return 503, f"the device has no memory for this decode now: {one_line(e)}", {"Retry-After": str(retry_after)}
    if isinstance(e, NonFiniteOutputError):
        return 500, one_line(e), {}
    if isinstance(e, PidError):  # bad input the early checks could not see
        return 400, one_line(e), {}
    from ..captions import TextEncoderUnavailable

    if isinstance(e, (TextEncoderUnavailable, ImportError)):  # a caption not in the cache, and no Gemma here
        return 400, (f"{one_line(e)} (this server encodes caption text with Gemma; send caption_embeds to "
                     "/v1/decode instead)"), {}
    log.exception("decode failed", exc_info=e)
    return 500, f"internal error: {type(e).__name__}: {one_line(e)}", {}


def _gib(n: Optional[int]) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"
