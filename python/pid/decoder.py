"""`PidDecoder`: a loaded PiD network with its configuration and variant; `pid.load` builds one."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from . import checkpoint
from .config import PidConfig
from .nn import PidNet
from .variants import Variant

log = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


class PidDecoder:
    """A PiD network ready for inference: `net` (a PidNet in eval mode), `config`, and `variant` (the registry
    entry, or None for a network given only by its config)."""

    def __init__(self, net: PidNet, variant: Optional[Variant] = None, source: Optional[str] = None):
        self.net = net
        self.config: PidConfig = net.config
        self.variant = variant
        self.source = source

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def info(self) -> dict[str, Any]:
        v = self.variant
        out: dict[str, Any] = {
            "source": self.source,
            "variant": v.name if v else None,
            "parameters": self.num_parameters(),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "sr_scale": self.config.sr_scale,
            "latent_channels": self.config.lq_latent_channels,
        }
        if v is not None:
            out.update(experiment=v.experiment, generation=v.generation, kind=v.kind, latent_space=v.latent.name,
                       vae_factor=v.latent.vae_factor, sampler=v.sampler.sampler, steps=v.sampler.steps,
                       trained_sizes=[f"{w}x{h}" for w, h in v.trained_sizes],
                       trained_side_range=list(v.trained_side_range))
        return out

    def __repr__(self) -> str:
        name = self.variant.name if self.variant else "custom"
        return (f"PidDecoder({name}, {self.num_parameters() / 1e6:.1f}M params, device={self.device}, "
                f"dtype={str(self.dtype).replace('torch.', '')})")


def load(checkpoint_or_state_dict: "str | os.PathLike | Mapping[str, torch.Tensor]", variant: Optional[str] = None,
         config: "PidConfig | Mapping[str, Any] | None" = None, device: "str | torch.device" = "cpu",
         dtype: torch.dtype = torch.float32) -> PidDecoder:
    """Load a PiD checkpoint (`model_ema_bf16.pth`, `.safetensors`, or an in-memory state dict).

    The network is chosen by `config` (a PidConfig or the reference PidNet kwargs), else `variant` (a registry
    name such as "flux-v1.5", an experiment name, or an official registry key), else the file's metadata or
    official folder name, else the weights' fingerprint when it is unambiguous. Weights are stored as `dtype`
    (float32 holds the released bf16 values exactly: the reference precision regime)."""
    dtype = _check_dtype(dtype)
    device = _check_device(device)
    path: Optional[Path] = None
    metadata: dict[str, str] = {}
    if isinstance(checkpoint_or_state_dict, Mapping):
        raw = checkpoint_or_state_dict
        source = "<state dict>"
    else:
        path = Path(checkpoint_or_state_dict)
        log.info("reading %s", path)
        raw, metadata = checkpoint.read_checkpoint(path)
        source = str(path)
    state_dict = checkpoint.filter_reference_keys(raw)
    cfg, chosen = checkpoint.resolve(state_dict, variant=variant, config=config, path=path, metadata=metadata)
    with torch.device("meta"):
        net = PidNet(cfg)
    net.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}, assign=True)
    net.eval().requires_grad_(False)
    decoder = PidDecoder(net, chosen, source)
    log.info("loaded %r", decoder)
    return decoder


def _check_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype} is not supported; use torch.float32 (reference precision) or "
                         "torch.bfloat16")
    return dtype


def _check_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                         "use device='cpu' or install a CUDA build of torch")
    return device
