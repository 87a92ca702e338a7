"""pid serve's batcher and lifecycle: requests decoded together each equal to their own decode, the scheduling rules,
overload (503 + Retry-After, none lost), per-request timeout, a disconnected client dropped before its decode, /health
while the weights load. A held decoder (serve_support.HeldDecoder) fills the queue deterministically."""

import asyncio
import concurrent.futures
import importlib.util
import json
import socket
import threading
import time
from urllib.parse import urlparse

import pytest
import torch

from serve_support import HeldDecoder, caption_embeds, httpx, metric, running, tiny_decoder, wait_until

from pid.serve import Client, create_app  # noqa: E402
from pid.serve.batch_decode import DecodeJob, decode_jobs  # noqa: E402
from pid.serve.batcher import Batcher, QueueFull  # noqa: E402

# A sample decoded in a batch may differ from its decode alone by float rounding (a taller matrix product rounds
# differently); docs/serve.md gives the measured differences. This bound is far above them and far below any real
# difference (another seed or sigma changes pixels by O(1)).
BATCH_TOLERANCE = 1e-5


def _latent(seed, batch=1, side=2):
    return torch.randn(batch, 16, side, side, generator=torch.Generator().manual_seed(seed))


def _remote(url, x, **params):
    query = {"shape": list(x.shape), "dtype": "float32", "output_type": "pt", "do_scaling": "True", **params}
    response = httpx.post(f"{url}/", content=x.numpy().tobytes(), params=query, timeout=120)
    if response.status_code != 200:
        return response, None
    shape = json.loads(response.headers["shape"])
    return response, torch.frombuffer(bytearray(response.content), dtype=torch.float32).reshape(shape)


# ------------------------------------------------------------------------------------------ batched decodes
def test_decode_jobs_each_equal_to_its_own_decode():
    decoder = tiny_decoder()
    default = caption_embeds(1)
    jobs = [DecodeJob(_latent(1), [0.0], seed=5),
            DecodeJob(_latent(2, batch=2), [0.2, 0.6], seed=6, caption_embeds=torch.cat([caption_embeds(2),
                                                                                          caption_embeds(3)])),
            DecodeJob(_latent(3), [0.4], seed=7, caption_embeds=caption_embeds(4))]
    batched = decode_jobs(decoder, jobs, default_embeds=default)
    alone = decode_jobs(decoder, jobs[2:], default_embeds=default)[0]
    for job, images in zip(jobs, batched):
        ref = decoder.decode(job.latent, sigma=job.sigma, seed=job.seed, progress=False,
                             caption_embeds=default if job.caption_embeds is None else job.caption_embeds)
        assert images.shape == ref.shape
        assert (images - ref).abs().max().item() <= BATCH_TOLERANCE
    ref = decoder.decode(jobs[2].latent, sigma=0.4, seed=7, caption_embeds=caption_embeds(4), progress=False)
    assert torch.equal(alone, ref)  # alone: bit for bit
    other = decoder.decode(jobs[2].latent, sigma=0.4, seed=8, caption_embeds=caption_embeds(4), progress=False)
    assert (other - ref).abs().max().item() > 0.1  # what the tolerance would have to hide: a seed's difference


def test_decode_jobs_a_bad_request_fails_alone():
    decoder = tiny_decoder()
    good = DecodeJob(_latent(1), [0.0], seed=1)
    bad = DecodeJob(_latent(2), [0.0], seed=2, caption_embeds=torch.zeros(1, 12, 7))  # wrong width
    results = decode_jobs(decoder, [good, bad], default_embeds=caption_embeds(1))
    assert isinstance(results[1], ValueError) and "caption" in str(results[1])
    ref = decoder.decode(good.latent, seed=1, caption_embeds=caption_embeds(1), progress=False)
    assert torch.equal(results[0], ref)


def test_server_batches_compatible_requests_and_keeps_each_ones_settings():
    decoder = tiny_decoder(HeldDecoder)
    default = caption_embeds(1)
    with running(create_app(decoder, caption_embeds=default, max_batch=4, batch_wait_ms=0)) as url, \
            concurrent.futures.ThreadPoolExecutor(6) as pool:
        decoder.hold()
        decoder.calls.clear()

        def decode(**kwargs):
            with Client(url) as client:
                return client.decode(**kwargs)
        first = pool.submit(decode, latent=_latent(0), seed=1)
        wait_until(lambda: len(decoder.calls) == 1, what="the first decode")
        requests = {  # arriving while the device is busy: B and C batch together; D (another size), E (other steps)
            "B": dict(latent=_latent(1), sigma=0.2, seed=2, caption_embeds=caption_embeds(2)),
            "C": dict(latent=_latent(2, batch=2), sigma=[0.1, 0.5], seed=3),
            "D": dict(latent=_latent(3, side=3), sigma=0.3, seed=4),
            "E": dict(latent=_latent(4), seed=5, steps=2),
        }
        futures = {}
        for name, kwargs in requests.items():
            futures[name] = pool.submit(decode, **kwargs)
            wait_until(lambda: metric(url, "pid_serve_queue_depth") == len(futures), what=f"{name} queued")
        decoder.release()
        results = {name: f.result() for name, f in futures.items()}
        first.result()
    assert decoder.calls == [1, 3, 1, 1]  # A; B + C (3 samples); D; E
    reference = tiny_decoder()
    for name, kwargs in requests.items():
        kwargs = dict(kwargs)
        latent = kwargs.pop("latent")
        kwargs.setdefault("caption_embeds", default)
        ref = reference.decode(latent, progress=False, **kwargs)
        if name in ("D", "E"):
            assert torch.equal(results[name], ref), name  # decoded alone
        else:
            assert (results[name] - ref).abs().max().item() <= BATCH_TOLERANCE, name


# ------------------------------------------------------------------------------------------ scheduling rules
def _run_batcher(scenario, **kwargs):
    """Runs `scenario(batcher, gate, batches)` on an event loop; the batcher's decode waits for `gate` and records
    each batch's works."""
    batches, gate = [], threading.Event()

    def run(works):
        batches.append(list(works))
        gate.wait(10)
        return [f"done {w}" for w in works]

    async def main():
        batcher = Batcher(run, **kwargs)
        batcher.start()
        try:
            return await scenario(batcher, gate, batches)
        finally:
            gate.set()
            await batcher.close()
    return asyncio.run(main()), batches


def test_batcher_idle_device_starts_at_once_busy_device_gathers_companions():
    async def scenario(batcher, gate, batches):
        gate.set()
        start = time.monotonic()
        assert await batcher.submit("a", "k", 1).future == "done a"
        idle_latency = time.monotonic() - start  # arrived at an idle device: no waiting despite batch_wait
        gate.clear()
        busy = batcher.submit("b", "k", 1)
        await asyncio.sleep(0.05)
        c = batcher.submit("c", "k", 1)  # arrives while b decodes
        d = batcher.submit("d", "other", 1)  # another key: its own batch
        e = batcher.submit("e", "k", 1)  # fills c's batch (max 2): it starts without waiting out batch_wait
        f = batcher.submit("f", "other", 1)  # fills d's
        gate.set()
        await asyncio.gather(busy.future, c.future, d.future, e.future, f.future)
        return idle_latency

    idle_latency, batches = _run_batcher(scenario, max_batch=2, batch_wait=5.0)
    assert idle_latency < 2.0
    assert batches == [["a"], ["b"], ["c", "e"], ["d", "f"]]


def test_batcher_waits_at_most_batch_wait_for_companions():
    async def scenario(batcher, gate, batches):
        gate.clear()
        first = batcher.submit("a", "k", 1)
        await asyncio.sleep(0.02)
        lone = batcher.submit("b", "k", 1)  # arrived while busy; no companion comes
        gate.set()
        await first.future
        await lone.future
        return lone.started - lone.arrival

    waited, batches = _run_batcher(scenario, max_batch=4, batch_wait=0.3)
    assert batches == [["a"], ["b"]]
    assert waited >= 0.29


def test_batcher_queue_bound_and_cancel():
    async def scenario(batcher, gate, batches):
        running = batcher.submit("a", "k", 1)
        while not batches:
            await asyncio.sleep(0.001)
        waiting = [batcher.submit(w, "k", 1) for w in "bc"]
        with pytest.raises(QueueFull):
            batcher.submit("d", "k", 1)
        assert batcher.cancel(waiting[0])  # dropped before its decode
        batcher.submit("e", "k", 1)  # its slot is free again
        assert batcher.retry_after() >= 1
        gate.set()
        await running.future
        while len(batches) < 2:
            await asyncio.sleep(0.001)
        return waiting[0].future.cancelled()

    cancelled, batches = _run_batcher(scenario, max_batch=4, max_queue=2, batch_wait=0.0)
    assert cancelled and batches == [["a"], ["c", "e"]]


def test_batcher_with_no_queue_decodes_at_an_idle_device_only():
    """max_queue=0: no request waits, but one that would start at once is taken."""
    async def scenario(batcher, gate, batches):
        gate.clear()
        running = batcher.submit("a", "k", 1)  # idle: taken
        while not batches:
            await asyncio.sleep(0.001)
        with pytest.raises(QueueFull):
            batcher.submit("b", "k", 1)  # it would wait
        gate.set()
        assert await running.future == "done a"
        while batcher.busy:
            await asyncio.sleep(0.001)
        return await batcher.submit("c", "k", 1).future  # idle again: taken

    result, batches = _run_batcher(scenario, max_batch=4, max_queue=0, batch_wait=0.0)
    assert result == "done c" and batches == [["a"], ["c"]]


def test_batcher_keeps_going_when_a_batch_estimate_fails():
    """A memory check that raises only keeps requests apart; the loop goes on (it is the server's only decoder)."""
    def fits(jobs):
        raise RuntimeError("estimate failed")

    async def scenario(batcher, gate, batches):
        gate.clear()
        first = batcher.submit("a", "k", 1)
        while not batches:
            await asyncio.sleep(0.001)
        rest = [batcher.submit(w, "k", 1) for w in "bc"]  # would batch together, but their estimate fails
        gate.set()
        return [await j.future for j in (first, *rest)]

    results, batches = _run_batcher(scenario, max_batch=4, batch_wait=0.0, fits=fits)
    assert results == ["done a", "done b", "done c"] and batches == [["a"], ["b"], ["c"]]


# ------------------------------------------------------------------------------------------ lifecycle over HTTP
def test_overload_some_503_none_lost_healthy_after():
    decoder = tiny_decoder(HeldDecoder)
    default = caption_embeds(1)
    latents = [_latent(i) for i in range(9)]
    with running(create_app(decoder, caption_embeds=default, max_batch=1, max_queue=2)) as url, \
            concurrent.futures.ThreadPoolExecutor(9) as pool:
        decoder.hold()
        decoder.calls.clear()
        first = pool.submit(_remote, url, latents[0], seed=0)
        wait_until(lambda: len(decoder.calls) == 1, what="the first decode")
        rest = [pool.submit(_remote, url, x, seed=i) for i, x in enumerate(latents[1:], 1)]
        wait_until(lambda: metric(url, 'pid_serve_requests_total{endpoint="remote",status="503"}') == 6,
                   what="six refusals")
        decoder.release()
        answers = [first.result()] + [f.result() for f in rest]
        statuses = [r.status_code for r, _ in answers]
        assert statuses.count(200) == 3 and statuses.count(503) == 6  # one decoding + two queued; none lost
        for i, (response, images) in enumerate(answers):
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1 and "queue is full" in response.json()["error"]
                continue
            ref = decoder.decode(latents[i], seed=i, caption_embeds=default, progress=False)
            assert torch.equal(images, ref)
        assert httpx.get(f"{url}/health").status_code == 200
        response, images = _remote(url, latents[0], seed=0)  # serving normally again
        assert response.status_code == 200


def _send_and_hang_up(url, x):
    """A remote-decode request whose client closes the connection before the reply."""
    u = urlparse(url)
    body = x.numpy().tobytes()
    query = "shape=1&shape=16&shape=2&shape=2&dtype=float32&output_type=pt&do_scaling=True"
    with socket.create_connection((u.hostname, u.port)) as s:
        s.sendall(f"POST /?{query} HTTP/1.1\r\nHost: {u.hostname}\r\nContent-Type: tensor/binary\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.2)  # the server has read it and queued it


HTTP_IMPLEMENTATIONS = ["h11"] + (["httptools"] if importlib.util.find_spec("httptools") else [])


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)  # uvicorn's two: each tells of a disconnect its own way
def test_timeout_and_disconnected_clients_are_dropped_before_their_decode(http):
    decoder = tiny_decoder(HeldDecoder)
    app = create_app(decoder, caption_embeds=caption_embeds(1), max_batch=1, timeout=1.0)
    with running(app, http=http) as url, \
            concurrent.futures.ThreadPoolExecutor(3) as pool:
        decoder.hold()
        decoder.calls.clear()
        running_one = pool.submit(_remote, url, _latent(0))
        wait_until(lambda: len(decoder.calls) == 1, what="the first decode")
        queued = pool.submit(_remote, url, _latent(1))
        _send_and_hang_up(url, _latent(2))
        wait_until(lambda: metric(url, "pid_serve_dropped_before_decode_total") == 1, what="the hang-up dropped")
        for future in (running_one, queued):  # both past --timeout: 504; the queued one is never decoded
            response, _ = future.result()
            assert response.status_code == 504 and "timeout" in response.json()["error"], response.text
        assert metric(url, "pid_serve_dropped_before_decode_total") == 2
        assert metric(url, 'pid_serve_requests_total{endpoint="remote",status="499"}') == 1
        decoder.release()
        response, images = _remote(url, _latent(3))
        assert response.status_code == 200
        assert decoder.calls == [1, 1]  # the held one and the last: neither dropped request reached the decoder


def test_health_is_503_until_the_weights_are_loaded_and_warmed_up():
    loaded = threading.Event()

    def load():
        assert loaded.wait(30)
        return tiny_decoder()

    with running(create_app(load, caption_embeds=caption_embeds(1)), healthy=False) as url:
        response = httpx.get(f"{url}/health")
        assert response.status_code == 503 and response.json() == {"status": "loading"}
        response, _ = _remote(url, _latent(0))
        assert response.status_code == 503 and "loading" in response.json()["error"] and response.headers["retry-after"]
        loaded.set()
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, what="ready")
        assert _remote(url, _latent(0))[0].status_code == 200


def test_a_decoder_that_cannot_start_says_why():
    def load():
        raise FileNotFoundError("checkpoint x.pth does not exist")

    with running(create_app(load), healthy=False) as url:
        wait_until(lambda: "error" in httpx.get(f"{url}/health").json(), what="the failure")
        response = httpx.get(f"{url}/health")
        assert response.status_code == 503 and "x.pth" in response.json()["error"]
        assert "x.pth" in _remote(url, _latent(0))[0].json()["error"]
