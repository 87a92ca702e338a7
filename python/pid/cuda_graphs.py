"""Whole decodes captured in CUDA graphs (`decode(cuda_graph=True)`): the conditioning and the sampling loop recorded
once per shape and setting, then replayed with new inputs copied into the graph's buffers (no per-kernel launch
cost). Each graph keeps its working memory, so a decoder keeps only the last few."""

from __future__ import annotations

import logging
from typing import Callable, Hashable

import torch

from .inputs import DecodeInputs

log = logging.getLogger(__name__)

MAX_GRAPHS = 4  # captured decodes a decoder keeps


class CapturedDecode:
    """One decode captured for fixed shapes; `replay` copies new inputs into the static buffers. Holds the tensors
    the graph reads (`keep_alive`, e.g. the precomputed time conditions)."""

    def __init__(self, sample: Callable[[DecodeInputs], torch.Tensor], inputs: DecodeInputs, keep_alive=None):
        self.inputs = inputs.map(torch.Tensor.clone)
        self.keep_alive = keep_alive  # the graph reads their memory: keep them alive
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: libraries' workspaces, kernel loading
            sample(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = sample(self.inputs)
        log.info("captured a CUDA graph of the decode for %s", tuple(inputs.noise.shape))

    def replay(self, inputs: DecodeInputs) -> torch.Tensor:
        for name, value in vars(inputs).items():
            static = getattr(self.inputs, name)
            if isinstance(static, torch.Tensor):
                static.copy_(value)
            elif static is not None:
                for s, v in zip(static, value):
                    s.copy_(v)
        self.graph.replay()
        return self.output.clone()


def input_shapes(inputs: DecodeInputs) -> tuple:
    """The shapes of a decode's tensors (None where absent): part of a graph's key."""
    def shape(value):
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        return tuple(shape(v) for v in value)
    return tuple(shape(v) for v in vars(inputs).values())


class DecodeGraphs:
    """A decoder's captured decodes by key (the sampler settings, the plan and the input shapes), the last
    MAX_GRAPHS of them."""

    def __init__(self):
        self._graphs: dict[Hashable, CapturedDecode] = {}

    def run(self, key: Hashable, sample: Callable[[DecodeInputs], torch.Tensor], inputs: DecodeInputs,
            keep_alive=None) -> torch.Tensor:
        """Replays the graph of `key`, capturing `sample` first if there is none."""
        if key not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:  # each holds its working memory: drop the oldest
                del self._graphs[next(iter(self._graphs))]
            self._graphs[key] = CapturedDecode(sample, inputs, keep_alive)
        return self._graphs[key].replay(inputs)

    def clear(self) -> None:
        self._graphs.clear()

    def __len__(self) -> int:
        return len(self._graphs)

    def __iter__(self):
        return iter(self._graphs)  # the keys, oldest first
