"""Bad input to pid serve: each a JSON error with the status the issue names (diffusers' client raises
RuntimeError(response.json())), while the server keeps serving; the memory budget's 413, decided before the body is
read."""

import json

import numpy as np
import pytest
import torch

from serve_support import caption_embeds, httpx, metric, running, tiny_decoder

remote_utils = pytest.importorskip("diffusers.utils.remote_utils")
remote_decode = remote_utils.remote_decode

from pid.serve import create_app  # noqa: E402

GOOD = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def served():
    decoder = tiny_decoder()
    with running(create_app(decoder, caption_embeds=caption_embeds(1), max_batch=2)) as url:
        yield decoder, url


def _post(url, body: bytes, path="/", **params):
    query = {"output_type": "pt", "partial_postprocess": "False", "image_format": "jpg", **params}
    return httpx.post(url + path, content=body, params=query, headers={"Content-Type": "tensor/binary"}, timeout=60)


def _still_serving(url, decoder):
    out = remote_decode(endpoint=f"{url}/", tensor=GOOD, output_type="pt", return_type="pt", do_scaling=False)
    ref = decoder.decode(GOOD, latent_format="raw", caption_embeds=caption_embeds(1), progress=False)
    assert torch.equal(out, ref)
    assert httpx.get(f"{url}/health").status_code == 200


def _error(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    return message


CASES = {  # name: (body, query, status, words the message names)
    "body length not shape x dtype": (GOOD.numpy().tobytes()[:-4], dict(shape=[1, 16, 2, 2], dtype="float32"), 400,
                                      ["252 bytes", "256 bytes"]),
    "unknown dtype": (GOOD.numpy().tobytes(), dict(shape=[1, 16, 2, 2], dtype="float64"), 400, ["float64"]),
    "wrong channel count": (torch.zeros(1, 4, 2, 2).numpy().tobytes(), dict(shape=[1, 4, 2, 2], dtype="float32"), 400,
                            ["16-channel", "4"]),
    "NaN in the latent": (torch.full((1, 16, 2, 2), float("nan")).numpy().tobytes(),
                          dict(shape=[1, 16, 2, 2], dtype="float32"), 400, ["NaN"]),
    "huge shape": (b"\0" * 16, dict(shape=[1, 16, 100000, 100000], dtype="float32"), 413, ["never hold", "GiB"]),
    "non-numeric sigma": (GOOD.numpy().tobytes(), dict(shape=[1, 16, 2, 2], dtype="float32", sigma="abc"), 400,
                          ["sigma", "'abc'"]),
    "sigma outside [0, 1]": (GOOD.numpy().tobytes(), dict(shape=[1, 16, 2, 2], dtype="float32", sigma="1.5"), 400,
                             ["[0, 1]"]),
    "missing shape": (GOOD.numpy().tobytes(), dict(dtype="float32"), 400, ["shape", "missing"]),
    "unknown parameter": (GOOD.numpy().tobytes(), dict(shape=[1, 16, 2, 2], dtype="float32", sigam="0.3"), 400,
                          ["sigam"]),
    "more samples than --max-batch": (torch.zeros(3, 16, 2, 2).numpy().tobytes(),
                                      dict(shape=[3, 16, 2, 2], dtype="float32"), 413, ["--max-batch"]),
    "packed latent without height": (torch.zeros(1, 4, 64).numpy().tobytes(), dict(shape=[1, 4, 64], dtype="float32"),
                                     400, ["height and width"]),
    "packed latent of another size": (torch.zeros(1, 4, 64).numpy().tobytes(),
                                      dict(shape=[1, 4, 64], dtype="float32", height=64, width=64), 400,
                                      ["16 tokens", "64x64"]),
    "mp4": (GOOD.numpy().tobytes(), dict(shape=[1, 16, 2, 2], dtype="float32", output_type="mp4"), 400, ["images"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_json_error_and_the_server_keeps_serving(served, name):
    decoder, url = served
    body, query, status, words = CASES[name]
    _error(_post(url, body, **query), status, *words)
    _still_serving(url, decoder)


def test_diffusers_client_raises_the_servers_message(served):
    decoder, url = served
    with pytest.raises(RuntimeError, match="'error': .*not supported"):
        remote_decode(endpoint=f"{url}/", tensor=torch.zeros(1, 16, 2, 2, dtype=torch.int64), output_type="pt",
                      return_type="pt", do_scaling=False)
    with pytest.raises(RuntimeError, match="16-channel latents"):
        remote_decode(endpoint=f"{url}/", tensor=torch.zeros(1, 4, 2, 2), output_type="pt", return_type="pt",
                      do_scaling=False)
    with pytest.raises(RuntimeError, match="returns one image"):  # pil of a batch
        remote_decode(endpoint=f"{url}/", tensor=torch.zeros(2, 16, 2, 2), output_type="pil", do_scaling=False)
    _still_serving(url, decoder)
    assert metric(url, 'pid_serve_requests_total{endpoint="remote",status="400"}') >= 3


def test_native_endpoint_bad_input(served):
    from safetensors.torch import save

    decoder, url = served
    post = lambda body, **kw: httpx.post(f"{url}/v1/decode", content=body, timeout=60, **kw)  # noqa: E731
    _error(post(b"not a safetensors file"), 400, "safetensors")
    _error(post(save({"lat": GOOD})), 400, "'latent'")
    _error(post(save({"latent": GOOD.repeat(2, 1, 1, 1)}), headers={"Accept": "image/png"}), 400, "one image")
    _error(post(save({"latent": GOOD}), headers={"Accept": "text/html"}), 406, "image/png")
    _error(post(save({"latent": GOOD, "caption_embeds": caption_embeds(2)}), params={"caption": "x"}), 400,
           "not both")
    _error(post(save({"latent": GOOD, "caption_embeds": torch.zeros(1, 12, 7)})), 400, "caption_embeds")
    _error(post(save({"latent": GOOD, "sigma": torch.tensor([0.1, 0.2, 0.3])})), 400, "3 values for 1")
    # a header announcing a huge latent: refused from the header alone, before any tensor is read
    header = json.dumps({"latent": {"dtype": "F32", "shape": [1, 16, 100000, 100000], "data_offsets": [0, 64]}})
    _error(post(len(header).to_bytes(8, "little") + header.encode() + bytes(64)), 413, "never hold")
    _still_serving(url, decoder)


def test_memory_budget_refuses_what_never_fits_and_caps_batches():
    """--max-memory 45 MB: a 128² decode of the tiny network (~37 MB estimated) fits one at a time, never two; a 2048²
    one does not fit at all (413, before the body is read)."""
    from serve_support import HeldDecoder, wait_until

    decoder = tiny_decoder(HeldDecoder)
    app = create_app(decoder, caption_embeds=caption_embeds(1), max_batch=4, max_memory=45_000_000)
    with running(app) as url:
        _error(_post(url, b"", shape=[1, 16, 64, 64], dtype="float32"), 413, "max-memory", "2048x2048")
        decoder.hold()
        decoder.calls.clear()
        import concurrent.futures

        latents = [torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(_post, url, latents[0].numpy().tobytes(), shape=[1, 16, 4, 4], dtype="float32")
            wait_until(lambda: len(decoder.calls) == 1, what="the first decode")
            rest = [pool.submit(_post, url, x.numpy().tobytes(), shape=[1, 16, 4, 4], dtype="float32")
                    for x in latents[1:]]
            wait_until(lambda: metric(url, "pid_serve_queue_depth") == 2, what="two queued requests")
            decoder.release()
            responses = [first.result()] + [f.result() for f in rest]
        assert [r.status_code for r in responses] == [200] * 3
        assert decoder.calls == [1, 1, 1]  # two compatible requests, never batched: two samples exceed the budget
        for x, r in zip(latents, responses):
            shape = json.loads(r.headers["shape"])
            out = torch.frombuffer(bytearray(r.content), dtype=torch.float32).reshape(shape)
            ref = decoder.decode(x, latent_format="raw", caption_embeds=caption_embeds(1), progress=False)
            assert np.array_equal(out.numpy(), ref.numpy())
