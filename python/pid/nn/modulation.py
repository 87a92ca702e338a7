"""adaLN-Zero modulations by name. Each sub-layer (attention, feed-forward) of a block reads its input as
norm(x)·(1 + scale) + shift and adds its output to the residual stream as x + gate·f(...); one Linear makes the six
vectors of a block from the timestep (MMDiT) or the patch (PiT), in the reference's order: shift, scale, gate of the
attention, then of the feed-forward."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class AdaLN(NamedTuple):
    """One sub-layer's modulation."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


class StreamModulation(NamedTuple):
    """One token stream's modulation in one block: its attention's and its feed-forward's."""

    attention: AdaLN
    mlp: AdaLN

    @classmethod
    def split(cls, vectors: torch.Tensor) -> "StreamModulation":
        """[..., 6D] (the adaLN Linear's output) → its six D-wide views, in the reference's order."""
        chunks = vectors.chunk(6, dim=-1)
        return cls(AdaLN(*chunks[:3]), AdaLN(*chunks[3:]))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "StreamModulation":
        return StreamModulation(AdaLN(*map(fn, self.attention)), AdaLN(*map(fn, self.mlp)))


class BlockModulation(NamedTuple):
    """An MMDiT block's modulation of its image and text streams; it depends only on the timestep."""

    image: StreamModulation
    text: StreamModulation

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "BlockModulation":
        return BlockModulation(self.image.map(fn), self.text.map(fn))


class PixelChunks(NamedTuple):
    """Where one sub-layer's shift, scale and gate lie among the six c-wide chunks of a per-pixel modulation."""

    shift: int
    scale: int
    gate: int


class PixelModulation(NamedTuple):
    """A PiT block's per-pixel modulation [n, p², 6c] (one per pixel of each of n patches). The fused norm kernels read
    its chunks in place, so it stays one tensor and names the chunks' places: the attention's (0, 1, 2) and the
    feed-forward's (3, 4, 5)."""

    table: torch.Tensor
    channels: int  # c

    ATTENTION = PixelChunks(0, 1, 2)
    MLP = PixelChunks(3, 4, 5)

    def chunk(self, index: int) -> torch.Tensor:
        """Chunk `index` of every pixel, [n, p², c] (a view)."""
        c = self.channels
        return self.table[..., index * c:(index + 1) * c]
