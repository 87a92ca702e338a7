"""The node pack as ComfyUI loads it: `comfy_entrypoint()` returns this ComfyExtension (the V3 API)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .early_stop import PidEarlyStopKSampler, PidLatentNoiseLevel
from .model import register_model_folder
from .nodes import PidDecode, PidLoader

NODES = (PidLoader, PidDecode, PidEarlyStopKSampler, PidLatentNoiseLevel)


class PidExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


__all__ = ["NODES", "PidExtension"]
