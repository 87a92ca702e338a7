"""pid inside ComfyUI: the nodes of the PiD node pack (the repository's `comfyui/` folder only exposes them).

    latents.py     ComfyUI's LATENT layouts and the noise frame of a stopped latent -> PiD's (no ComfyUI needed)
    model.py       PID_DECODER: the decoder behind a ComfyUI ModelPatcher; checkpoints from ComfyUI's folders or the Hub
    memory.py      a decode inside ComfyUI's memory management: budget, progress, cancel, one replan on out-of-memory
    nodes.py       PiD Loader, PiD Decode
    early_stop.py  PiD Early-Stop KSampler, PiD Latent Noise Level
    extension.py   the ComfyExtension that `comfy_entrypoint` returns

Only `latents` imports without ComfyUI; the other modules import ComfyUI's (`comfy`, `comfy_api`, `folder_paths`,
`nodes`), so they are imported when ComfyUI calls `comfy_entrypoint`, never with `pid`. Nothing is downloaded at
import: a released variant's weights are fetched when a PiD Loader first runs with it. See docs/comfyui.md.
"""


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: the extension that lists the PiD nodes."""
    from .extension import PidExtension

    return PidExtension()


__all__ = ["comfy_entrypoint"]
