"""Decoding entry points: `load` a checkpoint into a PidDecoder, or `decode` a latent in one call.

This module is also callable: ``pid.decode(checkpoint, latent, ...)`` is ``pid.decode.decode(checkpoint, latent,
...)``, so both ``import pid.decode`` and the one-call spelling work.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from . import checkpoint, hub
from .state_dict import filter_reference_keys
from . import parallel as pid_parallel
from .config import PidConfig
from .decoder import PidDecoder
from .errors import PidError
from .nn import PidNet
from .plan import resolve_precision, weights_dtype
from .captions import CaptionCache
from .variants import Variant

log = logging.getLogger(__name__)


def load(checkpoint_or_state_dict: "str | os.PathLike | Variant | Mapping[str, torch.Tensor]",
         variant: Optional[str] = None, config: "PidConfig | Mapping[str, Any] | None" = None,
         device: "str | torch.device" = "cpu", dtype: Optional[torch.dtype] = None, precision: Optional[str] = None,
         attention: Optional[str] = None, revision: Optional[str] = None, token: "str | bool | None" = None,
         caption_cache: "CaptionCache | str | None" = "default", parallel: Optional[str] = None,
         group=None, fp8_emulation: bool = False) -> PidDecoder:
    """Load a PiD checkpoint (`model_ema_bf16.pth`, `.safetensors`, or an in-memory state dict), or a released
    variant by name: `pid.load("flux-v1.5")`.

    A str that is not an existing file but a variant name (registry name, experiment name or official registry
    key) is `checkpoints/<experiment>/model_ema_bf16.pth` of `nvidia/PiD`, taken from the Hugging Face cache or
    downloaded (needs `pip install 'pid-decoder[hub]'`; `revision=` a branch, tag or commit, `token=` a Hugging Face token;
    `HF_HUB_OFFLINE=1`: the cache only). The name then decides the variant. See pid.hub.

    The network is chosen by `config` (a PidConfig or the reference PidNet kwargs), else `variant` (a registry
    name such as "flux-v1.5", an experiment name, or an official registry key), else the file's metadata or
    official folder name, else the weights' fingerprint when it is unambiguous.

    precision: "fast" (bf16 weights, bf16 autocast, fused kernels; the default on CUDA and on CPUs with native
    bfloat16), "float32" (float32 math, the parity regime; the default on other CPUs), "reference" (the official
    float32-weights + bf16 autocast regime) or "fp8" (fast with the large Linears as fp8 matrix products, opt-in, for
    GPUs with fp8 tensor cores; fp8_emulation=True emulates its products exactly in float32, slowly: where no fp8
    GPU is at hand, or to compare with one; docs/precision.md);
    see `pid.plan.default_precision`. `dtype` is the older spelling:
    float32 → the regime of float32 weights on the device (reference on CUDA, float32 on the CPU), bfloat16 → "fast". attention: the global-attention back end
    ("kernel", "sdpa", "fa4", "auto"; default: the device's, see docs/attention.md; "fa4" is FlashAttention-4, for
    sm90/sm100 GPUs with `pip install 'pid-decoder[fa4]'`). caption_cache: where encoded captions
    are kept, "default" (memory and `pid.captions.default_cache_dir()`: $PID_CACHE_DIR/captions, else
    $XDG_CACHE_HOME/pid/captions, else ~/.cache/pid/captions), a `pid.captions.CaptionCache`, or None (memory only).

    parallel: None (this process decodes alone), "sequence" (each decode's image tokens split across the ranks of
    the torch.distributed process group `group`, default the default group, which must be initialised: e.g. under
    torchrun) or "data" (each decode's samples split); every rank loads the weights and calls `decode` with the same
    arguments, and each gets the whole result. See pid.parallel."""
    device = check_device(device)
    parallel_info = pid_parallel.parallel_info(parallel, group)
    precision = resolve_precision(precision, dtype, device)
    dtype = weights_dtype(precision)
    path: Optional[Path] = None
    metadata: dict[str, str] = {}
    if isinstance(checkpoint_or_state_dict, Mapping):
        hub.refuse_revision(revision, "the checkpoint is a state dict")
        raw = checkpoint_or_state_dict
        source = "<state dict>"
    else:
        path, named = hub.resolve_checkpoint(checkpoint_or_state_dict, variant=variant, revision=revision, token=token)
        variant = variant if named is None else named.name
        log.info("reading %s", path)
        raw, metadata = checkpoint.read_checkpoint(path)
        source = str(path)
    state_dict = filter_reference_keys(raw)
    cfg, chosen = checkpoint.resolve(state_dict, variant=variant, config=config, path=path, metadata=metadata)
    with torch.device("meta"):
        net = PidNet(cfg)
    net.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}, assign=True)
    net.eval().requires_grad_(False)
    decoder = PidDecoder(net, chosen, source, precision, attention, caption_cache, parallel_info,
                         fp8_emulation=fp8_emulation)
    log.info("loaded %r", decoder)
    return decoder


def decode(checkpoint_or_state_dict, latent: torch.Tensor, *, variant: Optional[str] = None,
           config: "PidConfig | Mapping[str, Any] | None" = None, device: "str | torch.device" = "cpu",
           precision: Optional[str] = None, attention: Optional[str] = None, revision: Optional[str] = None,
           token: "str | bool | None" = None, caption_cache: "CaptionCache | str | None" = "default",
           parallel: Optional[str] = None, group=None, fp8_emulation: bool = False, **decode_kwargs):
    """One call: `load(...)` then `.decode(latent, **decode_kwargs)`. To decode several latents, load once."""
    return load(checkpoint_or_state_dict, variant=variant, config=config, device=device, precision=precision,
                attention=attention, revision=revision, token=token,
                caption_cache=caption_cache, parallel=parallel, group=group,
                fp8_emulation=fp8_emulation).decode(latent, **decode_kwargs)


def check_device(device) -> torch.device:
    """`device` as a torch.device that this machine has; PidError naming the fix otherwise."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PidError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PidError(f"device {device} was requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                           "use device='cpu' or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PidError(f"device {device} was requested but this machine has {torch.cuda.device_count()} CUDA "
                           f"GPU(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


class _CallableModule(types.ModuleType):
    """`pid.decode` is this module; calling it calls `decode`."""

    def __call__(self, *args, **kwargs):
        return decode(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
