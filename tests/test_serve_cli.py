"""`pid serve` as a process: it binds a free port, serves diffusers' client, and on SIGTERM stops accepting, answers
every request in flight and exits 0; its command-line errors are one line."""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from serve_support import caption_embeds, httpx, metric, wait_healthy

import pid  # noqa: E402


def _request(url, x, seed):
    query = {"shape": list(x.shape), "dtype": "float32", "output_type": "pt", "do_scaling": "True", "seed": seed}
    response = httpx.post(f"{url}/", content=x.numpy().tobytes(), params=query, timeout=120)
    assert response.status_code == 200, response.text
    return torch.frombuffer(bytearray(response.content), dtype=torch.float32).reshape(
        json.loads(response.headers["shape"]))


@pytest.fixture
def server(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    save_file({"caption_embeds": caption_embeds(1)}, str(tmp_path / "caption.safetensors"))
    args = ["--checkpoint", str(tiny_checkpoint.safetensors), "--config", str(tiny_checkpoint.config_json),
            "--variant", "flux-v1.5", "--precision", "float32"]
    process = subprocess.Popen([sys.executable, "-m", "pid", "serve", *args, "--caption-embeds",
                                str(tmp_path / "caption.safetensors"), "--port", "0", "--max-batch", "1"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log = []  # its stderr, read all along (a full pipe would block the server)
    reader = threading.Thread(target=lambda: log.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert process.poll() is None and time.monotonic() < deadline, f"pid serve did not start: {''.join(log)}"
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", "".join(log))
            url = match.group(1) if match else time.sleep(0.02)
        wait_healthy(url, deadline - time.monotonic())
        decoder = pid.load(str(tiny_checkpoint.safetensors), config=tiny_checkpoint.kwargs, variant="flux-v1.5",
                           precision="float32")
        yield process, url, decoder, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        reader.join(10)
        process.stderr.close()


def test_sigterm_answers_every_request_in_flight_and_exits_0(server):
    process, url, decoder, log = server
    latents = [torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_request, url, x, i) for i, x in enumerate(latents)]
        # --max-batch 1: one decodes while the others wait in the queue; stop the server then
        deadline = time.monotonic() + 60
        while metric(url, "pid_serve_queue_depth") < 1:
            time.sleep(0.01)
            assert time.monotonic() < deadline and not any(f.done() for f in futures), "no request was queued"
        process.send_signal(signal.SIGTERM)
        images = [f.result() for f in futures]
    for i, (x, out) in enumerate(zip(latents, images)):  # every one answered, and correctly
        ref = decoder.decode(x, seed=i, caption_embeds=caption_embeds(1), progress=False)
        assert torch.equal(out, ref)
    assert process.wait(60) == 0
    time.sleep(0.2)  # the reader takes the last lines
    assert any("stopped (SIGTERM)" in line for line in log), "".join(log)
    with pytest.raises(httpx.TransportError):  # no longer accepting
        httpx.get(f"{url}/health")


def test_command_line_errors_are_one_line(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    import importlib.util

    from pid.cli import main

    base = ["serve", "--checkpoint", str(tiny_checkpoint.safetensors), "--config", str(tiny_checkpoint.config_json)]
    for extra, words in ((["--port", "70000"], ["--port 70000"]),
                         (["--caption-embeds", str(tmp_path / "none.safetensors")], ["none.safetensors"]),
                         (["--max-batch", "0"], ["--max-batch"]),
                         (["--max-memory", "lots"], ["lots"]),
                         (["--timeout", "0"], ["--timeout"])):
        caplog.clear()
        assert main(base + extra) == 2
        assert any(all(w in r.getMessage() for w in words) for r in caplog.records), (extra, caplog.text)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    caplog.clear()
    assert main(base) == 2
    assert "pip install 'pid-decoder[serve]'" in caplog.text
