"""The replies of pid serve: decoded images as JPEG / PNG bytes, raw tensor bytes with `shape` / `dtype` headers (the
Remote VAE decode protocol's), or a safetensors file (pid's native form)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Optional

import torch

JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # zlib level 1: a 4096² PNG takes ~2 s on a CPU core at level 1, ~3 s at PIL's default 6
SAFETENSORS_TYPE = "application/x-safetensors"


@dataclass(frozen=True)
class ReplyFormat:
    """How decoded images go back: "jpeg" / "png" (one image), "tensor" (float32 [B, 3, H, W] in [-1, 1], raw bytes
    with `shape` / `dtype` headers), "pixels" (uint8 [B, H, W, 3], likewise) or "safetensors" (float32 images under
    "images")."""

    kind: str

    @property
    def single_image(self) -> bool:
        return self.kind in ("jpeg", "png")


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] pixels of images in [-1, 1], as the decoder makes them (`decode(output="numpy")`)."""
    from ..images import to_pixels as decoder_pixels

    return decoder_pixels(images)


def encode_reply(images: torch.Tensor, reply: ReplyFormat) -> tuple[bytes, str, dict[str, str]]:
    """(body, media type, headers) of a reply holding `images` (float32 [B, 3, H, W] in [-1, 1] on the CPU). Costly for
    large images (a PNG of 4096² takes seconds): run it off the event loop."""
    if reply.kind in ("jpeg", "png"):
        from PIL import Image

        image = Image.fromarray(to_pixels(images)[0].numpy())
        buffer = io.BytesIO()
        if reply.kind == "jpeg":
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        else:
            image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue(), f"image/{reply.kind}", {}
    if reply.kind == "safetensors":
        from safetensors.torch import save

        return save({"images": images.float().contiguous()}), SAFETENSORS_TYPE, {}
    tensor = images.float().contiguous() if reply.kind == "tensor" else to_pixels(images).contiguous()
    dtype = "float32" if reply.kind == "tensor" else "uint8"
    return tensor.numpy().tobytes(), "tensor/binary", {"shape": json.dumps(list(tensor.shape)), "dtype": dtype}


def error_response(status: int, message: str, headers: Optional[dict] = None):
    """An error reply: JSON {"error": message} (diffusers' client raises it as RuntimeError(response.json()))."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status, headers=headers)
