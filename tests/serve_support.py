"""Helpers of the pid serve tests: an in-process uvicorn on an ephemeral localhost port, decoders whose decodes a test
can hold (to fill a queue deterministically), and the networks the tests serve."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import pid
from pid.captions import CaptionCache

uvicorn = pytest.importorskip("uvicorn", reason="pid serve's extra is not installed: pip install 'pid-decoder[serve]'")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

LATENT_CHANNELS = 16
TXT_DIM = 32


class HeldDecoder(pid.PidDecoder):
    """A PidDecoder whose decodes wait while `hold` is cleared; `calls` records each decode's batch size."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def decode(self, latent, **kwargs):
        self.calls.append(latent.shape[0])
        if not self.gate.wait(60):
            raise RuntimeError("the test never released the held decode")
        return super().decode(latent, **kwargs)


def tiny_decoder(cls=pid.PidDecoder, seed: int = 0) -> pid.PidDecoder:
    """The tiny test network (pid.archs.TINY, random weights) as a FLUX.1 decoder, float32, captions in memory."""
    from pid.archs import TINY, random_net

    return cls(random_net(TINY, seed=seed), variant=pid.get_variant("flux-v1.5"), precision="float32",
               caption_cache=CaptionCache())


def golden_decoder(golden_dir: Path) -> pid.PidDecoder:
    """The golden v15_net (the reference's weights for a tiny FLUX.1-style network) as pid.load loads it."""
    from pid.golden import GoldenCase

    case = GoldenCase("v15_net", golden_dir)
    return pid.load(str(case.weights_path), config=case.meta["net_kwargs"], variant="flux-v1.5", precision="float32",
                    caption_cache=CaptionCache())


def caption_embeds(seed: int, length: int = 12) -> torch.Tensor:
    return torch.randn(1, length, TXT_DIM, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def running(app, *, healthy: bool = True, timeout: float = 60.0, http: str = "auto"):
    """Serves `app` with uvicorn (its `http` protocol implementation) on 127.0.0.1 (a free port) in a thread; yields
    its URL; stops it after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        if healthy:
            wait_healthy(url, deadline - time.monotonic())
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become healthy in {timeout} s"
        time.sleep(0.02)


def wait_until(condition, timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.005)


def metric(url: str, name: str) -> float:
    """The value of one sample line (`name` with its labels, as Prometheus prints it) of GET /metrics; 0 if absent."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
