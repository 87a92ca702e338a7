"""`Client(url).decode(latent, ...)`: decode on a `pid serve` server through its native endpoint (`POST /v1/decode`).

The latent (and caption embeddings, per-sample σ) travel as a safetensors file; the images come back as float32
[B, 3, H, W] in [-1, 1], exactly what `PidDecoder.decode` returns on the server."""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import torch

from ..errors import PidError
from . import replies
from .extras import require_serve_extra

log = logging.getLogger(__name__)


class ServerError(PidError):
    """The server refused or failed a request: `status` and its one-line message."""

    def __init__(self, status: int, message: str, retry_after: Optional[float] = None):
        super().__init__(f"pid server: {message} (HTTP {status})")
        self.status, self.message, self.retry_after = status, message, retry_after


class Client:
    """A `pid serve` server at `url` (e.g. http://127.0.0.1:8000). `timeout`: seconds for one request; `retries`:
    how many times a 503 (queue full, loading) is retried after the server's Retry-After."""

    def __init__(self, url: str, *, timeout: float = 600.0, retries: int = 2):
        require_serve_extra(("httpx",), "pid.serve.Client")
        import httpx

        self.url = url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> bool:
        """Whether the server is ready (weights loaded, warm-up decoded)."""
        import httpx

        try:
            return self._http.get(f"{self.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def decode(self, latent: torch.Tensor, *, sigma: "float | Sequence[float] | torch.Tensor" = 0.0, seed: int = 0,
               steps: Optional[int] = None, caption: Optional[str] = None,
               caption_embeds: Optional[torch.Tensor] = None, latent_format: str = "normalized",
               output: str = "tensor"):
        """Decode a latent [B, C, h, w] (or [C, h, w]) on the server: as `PidDecoder.decode(latent, sigma=, seed=,
        steps=, caption= | caption_embeds=, latent_format=)` there. `output`: "tensor" (float32 [B, 3, H, W] in
        [-1, 1]), "numpy" (uint8 [B, H, W, 3]) or "pil" (a list of images), the same pixels decode makes."""
        from safetensors.torch import load, save

        if output not in ("tensor", "numpy", "pil"):
            raise PidError(f"output must be 'tensor', 'numpy' or 'pil', got {output!r}")
        if not isinstance(latent, torch.Tensor):
            raise PidError(f"latent must be a torch.Tensor, got {type(latent).__name__}")
        tensors = {"latent": latent.detach().cpu().contiguous()}
        params: dict[str, str] = {"seed": str(int(seed)), "latent_format": latent_format}
        if isinstance(sigma, (int, float)):
            params["sigma"] = repr(float(sigma))
        else:
            tensors["sigma"] = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).contiguous()
        if steps is not None:
            params["steps"] = str(int(steps))
        if caption is not None:
            params["caption"] = caption
        if caption_embeds is not None:
            tensors["caption_embeds"] = caption_embeds.detach().cpu().contiguous()
        response = self._post("/v1/decode", save(tensors), params, {"Accept": replies.SAFETENSORS_TYPE})
        images = load(response.content)["images"]
        if output == "tensor":
            return images
        pixels = replies.to_pixels(images)
        if output == "numpy":
            return pixels.numpy()
        from PIL import Image

        return [Image.fromarray(p.numpy()) for p in pixels]

    def _post(self, path: str, body: bytes, params: dict, headers: dict):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(self.url + path, content=body, params=params, headers=headers)
            except httpx.HTTPError as e:
                raise ServerError(0, f"cannot reach {self.url} ({type(e).__name__}: {e}); is `pid serve` running "
                                  "there?") from None
            if response.status_code == 200:
                return response
            retry_after = _retry_after(response)
            error = ServerError(response.status_code, _message(response), retry_after)
            if response.status_code != 503 or attempt == self.retries:
                raise error
            log.info("%s; retrying in %.0f s", error, retry_after or 1)
            time.sleep(retry_after or 1)
        raise AssertionError("unreachable")


def _message(response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _retry_after(response) -> Optional[float]:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
