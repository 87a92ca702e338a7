"""The PID_DECODER that PiD Loader makes: a pid decoder whose weights ComfyUI's model management owns (wrapped in a
`ModelPatcher`, so ComfyUI counts them, loads them onto its device before a decode and unloads them when another
model needs the memory), and where its checkpoint comes from: ComfyUI's model folders (`models/pid`, and files with
"pid" in their name in `models/diffusion_models`) or, by variant name, the Hugging Face cache or Hub."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths

from .. import PidDecoder, load
from ..errors import PidError
from ..plan import resolve_precision
from ..variants import VARIANTS

log = logging.getLogger(__name__)

PID_FOLDER = "pid"  # models/pid
HUB_PREFIX = "hf:"  # a checkpoint choice naming a released variant: from the Hugging Face cache, else downloaded
PRECISIONS = ("auto", "fast", "float32", "reference")  # auto: pid's default for the device ComfyUI decodes on
ATTENTION = ("default", "kernel", "sdpa", "auto")  # default: the device's back end (docs/attention.md)


def register_model_folder() -> None:
    """Adds `models/pid` to ComfyUI's model folders (and keeps folders a user configured for "pid" in
    extra_model_paths.yaml)."""
    default = os.path.join(folder_paths.models_dir, PID_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(PID_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[PID_FOLDER] = ([default], set(folder_paths.supported_pt_extensions))
    elif default not in entry[0]:
        entry[0].append(default)


def checkpoint_choices() -> list[str]:
    """What PiD Loader lists: files in models/pid, files named *pid* in models/diffusion_models, then every released
    variant as "hf:<name>". Listing never touches the network."""
    register_model_folder()
    files = folder_paths.get_filename_list(PID_FOLDER)
    diffusion = [f for f in folder_paths.get_filename_list("diffusion_models")
                 if "pid" in os.path.basename(f).lower() and f not in files]
    return files + diffusion + [HUB_PREFIX + name for name in VARIANTS]


def checkpoint_source(choice: str) -> str:
    """A PiD Loader choice as `pid.load` takes it: a file's full path, or a released variant's name."""
    if choice.startswith(HUB_PREFIX):
        name = choice[len(HUB_PREFIX):]
        if name not in VARIANTS:
            raise PidError(f"{choice!r} names no released PiD variant; known: {', '.join(VARIANTS)}")
        return name
    register_model_folder()
    for folder in (PID_FOLDER, "diffusion_models"):
        path = folder_paths.get_full_path(folder, choice)
        if path is not None:
            return path
    raise PidError(f"PiD checkpoint {choice!r} is not in models/{PID_FOLDER} or models/diffusion_models; put the "
                   "file there (then refresh), or choose a released variant (hf:<name>)")


@dataclass
class PidModel:
    """A PID_DECODER: the decoder, and the ModelPatcher through which ComfyUI manages its weights."""

    decoder: PidDecoder
    patcher: "comfy.model_patcher.ModelPatcher"

    def load(self, memory_required: int) -> None:
        """Weights onto ComfyUI's device, every one of them (pid's network has no partial-load path), after ComfyUI
        frees what `memory_required` more bytes need, unloading other models (the LDM) when it must."""
        mm.load_models_gpu([self.patcher], memory_required=int(memory_required), force_full_load=True)


def load_pid_model(choice: str, variant: str = "auto", precision: str = "auto",
                   attention: str = "default") -> PidModel:
    """Reads a checkpoint into a PidModel whose weights wait on ComfyUI's offload device until a decode."""
    if precision not in PRECISIONS:
        raise PidError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if attention not in ATTENTION:
        raise PidError(f"attention must be one of {ATTENTION}, got {attention!r}")
    if variant != "auto" and variant not in VARIANTS:
        raise PidError(f"variant must be 'auto' or one of {', '.join(VARIANTS)}, got {variant!r}")
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    # The regime is the decode device's (bf16 "fast" on a GPU), whichever device the weights wait on.
    precision = resolve_precision(None if precision == "auto" else precision, device=device)
    decoder = load(checkpoint_source(choice), variant=None if variant == "auto" else variant, device=offload,
                   precision=precision, attention=None if attention == "default" else attention)
    patcher = comfy.model_patcher.ModelPatcher(decoder.net, load_device=device, offload_device=offload)
    log.info("PiD Loader: %r; decodes on %s", decoder, device)
    return PidModel(decoder, patcher)


__all__ = ["ATTENTION", "HUB_PREFIX", "PID_FOLDER", "PRECISIONS", "PidModel", "checkpoint_choices",
           "checkpoint_source", "load_pid_model", "register_model_folder"]
