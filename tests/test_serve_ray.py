"""The Ray Serve deployment (pid-decoder[ray]) on a local Ray instance with one CPU replica answers the same request
as the plain server, bit for bit."""

import socket
import time

import pytest
import torch

from serve_support import caption_embeds, httpx, running, wait_healthy

ray = pytest.importorskip("ray", reason="pid-decoder[ray] is not installed")
serve = pytest.importorskip("ray.serve")
remote_utils = pytest.importorskip("diffusers.utils.remote_utils")

import pid  # noqa: E402
from pid.serve import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_deployment_answers_as_the_plain_server(tiny_checkpoint):
    from pid.serve.ray import deployment

    load = dict(config=tiny_checkpoint.kwargs, variant="flux-v1.5", precision="float32")
    embeds = caption_embeds(1)
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    start = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = deployment(str(tiny_checkpoint.safetensors), device="cpu", num_replicas=1, max_batch=2,
                         caption_embeds=embeds, **load)
        serve.run(app, name="pid", route_prefix="/")  # returns once the replica is loaded and warm
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 60)
        started = time.monotonic() - start
        out_ray = remote_utils.remote_decode(endpoint=f"{url}/", tensor=x, output_type="pt", return_type="pt",
                                             do_scaling=False)
        native = httpx.post(f"{url}/v1/decode", content=b"not safetensors", timeout=60)
        assert native.status_code == 400 and "safetensors" in native.json()["error"]  # the app's own errors
    finally:
        serve.shutdown()
        ray.shutdown()
    decoder = pid.load(str(tiny_checkpoint.safetensors), **load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray runs a 1-CPU replica (OMP_NUM_THREADS=1): the same matrix-product splits
    try:
        with running(create_app(decoder, caption_embeds=embeds)) as plain:
            out_plain = remote_utils.remote_decode(endpoint=f"{plain}/", tensor=x, output_type="pt", return_type="pt",
                                                   do_scaling=False)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out_ray, out_plain)
    print(f"Ray: local instance, deployment loaded and healthy in {started:.1f} s")
