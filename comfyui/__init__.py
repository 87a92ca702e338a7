"""PiD node pack for ComfyUI: link or clone this folder into ComfyUI/custom_nodes/ (or install it from the Comfy
Registry). The nodes are part of the pid-decoder package (`pid.comfyui`), installed into ComfyUI's Python with
`pip install pid-decoder`; this file only hands them to ComfyUI. See docs/comfyui.md."""

try:
    import pid
except ModuleNotFoundError as e:
    if e.name != "pid":
        raise
    raise ImportError("the PiD nodes need the pid-decoder package in the Python environment that runs ComfyUI: "
                      "pip install pid-decoder (with that environment's pip)") from None

try:
    from pid.comfyui import comfy_entrypoint
except ModuleNotFoundError as e:
    if e.name != "pid.comfyui":
        raise
    raise ImportError(f"pid-decoder {pid.__version__} has no ComfyUI nodes (pid.comfyui): "
                      "pip install -U pid-decoder") from None

__all__ = ["comfy_entrypoint"]
