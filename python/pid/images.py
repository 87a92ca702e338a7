"""Decoded images in the forms a caller asks for: the float tensor [B, 3, H, W] in [-1, 1], uint8 pixels
[B, H, W, 3], or PIL images."""

from __future__ import annotations

import torch

from .errors import PidError

OUTPUTS = ("tensor", "numpy", "pil")


def check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise PidError(f"output must be 'tensor', 'numpy' or 'pil', got {output!r}")


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] → uint8 pixels [B, H, W, 3] on the CPU, as the reference saves them:
    (x + 1)·127.5 truncated."""
    return ((images.float() + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def format_output(images: torch.Tensor, output: str):
    """`images` [B, 3, H, W] in [-1, 1] as `output` asks: "tensor" (as is), "numpy" (uint8 [B, H, W, 3]) or "pil"
    (a list of PIL images)."""
    if output == "tensor":
        return images
    pixels = to_pixels(images)
    if output == "numpy":
        return pixels.numpy()
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("output='pil' needs Pillow: pip install 'pid-decoder[images]'") from e
    return [Image.fromarray(p.numpy()) for p in pixels]
