"""pid serve speaks the Remote VAE decode protocol: diffusers' own `remote_decode` against the server (in-process
uvicorn on localhost) on the golden v15 network, each result equal to `decoder.decode` of the same latent; PiD's own
query parameters; the native /v1/decode with `pid.serve.Client` and `pid decode --server`."""

import io
import warnings

import numpy as np
import pytest
import torch

from serve_support import caption_embeds, golden_decoder, httpx, metric, running

remote_utils = pytest.importorskip("diffusers.utils.remote_utils")
remote_decode = remote_utils.remote_decode

from pid.serve import Client, create_app  # noqa: E402

FLUX_SCALE, FLUX_SHIFT = 0.3611, 0.1159
DEFAULT_EMBEDS = caption_embeds(1)


@pytest.fixture(scope="module")
def served(golden_dir):
    decoder = golden_decoder(golden_dir)
    with running(create_app(decoder, caption_embeds=DEFAULT_EMBEDS, max_batch=4)) as url:
        yield decoder, url


def _latent(shape, dtype, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _reference(decoder, latent, **kwargs):
    kwargs.setdefault("caption_embeds", DEFAULT_EMBEDS)
    return decoder.decode(latent, progress=False, **kwargs)


def _pixels(images):
    return ((images + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_pt_float32_without_scaling_is_the_decoders_tensor_bit_for_bit(served):
    decoder, url = served
    x = _latent((1, 16, 4, 4), torch.float32)
    out = remote_decode(endpoint=f"{url}/", tensor=x, output_type="pt", return_type="pt", do_scaling=False)
    ref = _reference(decoder, x, latent_format="raw")  # absent factors: the body is the raw VAE latent
    assert out.dtype == torch.float32 and out.shape == (1, 3, 128, 128)
    assert torch.equal(out, ref)


def test_pt_bfloat16_with_scaling_and_shift(served):
    decoder, url = served
    x = _latent((1, 16, 4, 6), torch.bfloat16, seed=1)
    out = remote_decode(endpoint=f"{url}/decode", tensor=x, output_type="pt", return_type="pt",
                        scaling_factor=FLUX_SCALE, shift_factor=FLUX_SHIFT)
    raw = x.float() / FLUX_SCALE + FLUX_SHIFT  # what the pipeline hands its VAE
    assert out.shape == (1, 3, 128, 192)
    assert torch.equal(out, _reference(decoder, raw, latent_format="raw"))


def test_pt_partial_postprocess_is_the_decoders_uint8_pixels(served):
    decoder, url = served
    x = _latent((1, 16, 4, 4), torch.float16, seed=2)
    out = remote_decode(endpoint=f"{url}/", tensor=x, output_type="pt", return_type="pt", partial_postprocess=True,
                        scaling_factor=FLUX_SCALE, shift_factor=FLUX_SHIFT)
    ref = _reference(decoder, x.float() / FLUX_SCALE + FLUX_SHIFT, latent_format="raw", output="numpy")
    assert out.dtype == torch.uint8 and tuple(out.shape) == ref.shape == (1, 128, 128, 3)
    assert np.array_equal(out.numpy(), ref)
    image = remote_decode(endpoint=f"{url}/", tensor=x, output_type="pt", return_type="pil", partial_postprocess=True,
                          scaling_factor=FLUX_SCALE, shift_factor=FLUX_SHIFT)
    assert np.array_equal(np.asarray(image), ref[0])


def test_pil_png_pixel_for_pixel_with_the_legacy_do_scaling_flag(served):
    decoder, url = served
    x = _latent((1, 16, 4, 4), torch.float32, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates do_scaling
        image = remote_decode(endpoint=f"{url}/", tensor=x, output_type="pil", image_format="png")
    # do_scaling=True without a factor: the server applies its own latent space's normalisation, i.e. x is PiD's input
    ref = _reference(decoder, x, output="numpy")
    assert image.format == "png" and image.size == (128, 128)
    assert np.array_equal(np.asarray(image), ref[0])


def test_pil_jpg_is_the_jpeg_of_the_decoders_pixels(served):
    from PIL import Image

    from pid.serve.replies import JPEG_QUALITY

    decoder, url = served
    x = _latent((1, 16, 4, 4), torch.float16, seed=4)
    image = remote_decode(endpoint=f"{url}/", tensor=x, output_type="pil", image_format="jpg",
                          scaling_factor=FLUX_SCALE, shift_factor=FLUX_SHIFT)
    ref = _reference(decoder, x.float() / FLUX_SCALE + FLUX_SHIFT, latent_format="raw", output="numpy")[0]
    buffer = io.BytesIO()
    Image.fromarray(ref).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    assert image.format == "jpeg" and image.size == (128, 128)
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(buffer).convert("RGB")))


def test_packed_flux_latent_unpacked_as_diffusers_does(served):
    from diffusers import FluxPipeline

    decoder, url = served
    height, width = 64, 96  # the LDM image: an 8 x 12 latent, packed 2 x 2 into 4 x 6 tokens of 64 features
    packed = _latent((1, 24, 64), torch.bfloat16, seed=5)
    out = remote_decode(endpoint=f"{url}/", tensor=packed, output_type="pt", return_type="pt", height=height,
                        width=width, scaling_factor=FLUX_SCALE, shift_factor=FLUX_SHIFT)
    unpacked = FluxPipeline._unpack_latents(packed.float(), height, width, 8)  # diffusers' own unpacking
    assert unpacked.shape == (1, 16, 8, 12) and out.shape == (1, 3, 256, 384)
    assert torch.equal(out, _reference(decoder, unpacked / FLUX_SCALE + FLUX_SHIFT, latent_format="raw"))


def _post_remote(url, x, **params):
    """A remote-decode request as diffusers' client builds it, plus PiD's own query parameters."""
    query = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."), "output_type": "pt",
             "partial_postprocess": "False", "image_format": "jpg", **params}
    return httpx.post(f"{url}/", content=x.contiguous().numpy().tobytes(), params=query,
                      headers={"Content-Type": "tensor/binary", "Accept": "tensor/binary"}, timeout=120)


def _tensor_of(response):
    import json

    shape = json.loads(response.headers["shape"])
    assert response.headers["dtype"] == "float32"
    return torch.frombuffer(bytearray(response.content), dtype=torch.float32).reshape(shape)


def test_pid_query_parameters_sigma_seed_steps_caption(served):
    from pid.captions import encoder_cache_key

    decoder, url = served
    fox = torch.randn(1, 300, 32, generator=torch.Generator().manual_seed(9))
    decoder.caption_cache.put(encoder_cache_key(), "a red fox", fox)  # as if Gemma had encoded it
    x = _latent((2, 16, 4, 4), torch.float32, seed=6)
    response = _post_remote(url, x, sigma="0.2,0.5", seed=11, steps=2, caption="a red fox")
    assert response.status_code == 200, response.text
    ref = _reference(decoder, x, latent_format="raw", sigma=[0.2, 0.5], seed=11, steps=2, caption="a red fox",
                     caption_embeds=None)
    assert torch.equal(_tensor_of(response), ref)
    other_seed = _tensor_of(_post_remote(url, x, sigma="0.2,0.5", seed=12, steps=2, caption="a red fox"))
    assert not torch.equal(other_seed, ref)  # the seed reaches the decode


def test_native_endpoint_with_the_client(served):
    decoder, url = served
    latent = _latent((2, 16, 4, 4), torch.float32, seed=7)
    embeds = torch.cat([caption_embeds(2), caption_embeds(3)])
    with Client(url) as client:
        assert client.health()
        images = client.decode(latent, sigma=[0.1, 0.3], seed=7, caption_embeds=embeds)
        pil = client.decode(latent[:1], sigma=0.25, seed=5, steps=3, output="pil")
    ref = decoder.decode(latent, sigma=[0.1, 0.3], seed=7, caption_embeds=embeds, progress=False)
    assert torch.equal(images, ref)
    ref_pixels = _reference(decoder, latent[:1], sigma=0.25, seed=5, steps=3, output="numpy")
    assert len(pil) == 1 and np.array_equal(np.asarray(pil[0]), ref_pixels[0])


def test_native_endpoint_png_reply(served):
    from PIL import Image
    from safetensors.torch import save

    decoder, url = served
    latent = _latent((1, 16, 4, 4), torch.float32, seed=8)
    response = httpx.post(f"{url}/v1/decode", content=save({"latent": latent}), params={"sigma": "0.1", "seed": "3"},
                          headers={"Accept": "image/png"}, timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    ref = _reference(decoder, latent, sigma=0.1, seed=3, output="numpy")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), ref[0])


def test_pid_decode_server_command(served, tmp_path):
    from safetensors.torch import load_file, save_file

    from pid.cli import main

    decoder, url = served
    latent = _latent((1, 16, 4, 4), torch.float32, seed=9)
    save_file({"latent": latent}, str(tmp_path / "latent.safetensors"))
    save_file({"caption_embeds": caption_embeds(4)}, str(tmp_path / "caption.safetensors"))
    out = tmp_path / "images.safetensors"
    assert main(["decode", str(tmp_path / "latent.safetensors"), "--server", url, "--sigma", "0.3", "--seed", "4",
                 "--caption-embeds", str(tmp_path / "caption.safetensors"), "--out", str(out)]) == 0
    ref = decoder.decode(latent, sigma=0.3, seed=4, caption_embeds=caption_embeds(4), progress=False)
    assert torch.equal(load_file(str(out))["images"], ref)
    # options of a local decode are refused with --server (the server has its model and settings)
    assert main(["decode", str(tmp_path / "latent.safetensors"), "--server", url, "--checkpoint", "x.pth",
                 "--out", str(out)]) == 2


def test_health_info_and_metrics(served):
    decoder, url = served
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    info = httpx.get(f"{url}/info").json()
    assert info["ready"] and info["max_batch"] == 4 and info["decoder"]["variant"] == "flux-v1.5"
    before = metric(url, "pid_serve_images_decoded_total")
    x = _latent((1, 16, 4, 4), torch.float32)
    remote_decode(endpoint=f"{url}/", tensor=x, output_type="pt", return_type="pt", do_scaling=False)
    assert metric(url, "pid_serve_images_decoded_total") == before + 1
    assert metric(url, 'pid_serve_requests_total{endpoint="remote",status="200"}') >= 1
    for name in ("pid_serve_queue_depth", "pid_serve_batch_size_count", "pid_serve_queue_seconds_count",
                 "pid_serve_decode_seconds_count", "pid_serve_encode_seconds_count",
                 "pid_serve_device_memory_peak_bytes", "pid_serve_ready"):
        assert name in httpx.get(f"{url}/metrics").text
    assert metric(url, "pid_serve_device_memory_peak_bytes") > 0 and metric(url, "pid_serve_ready") == 1
