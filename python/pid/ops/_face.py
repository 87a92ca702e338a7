"""When a pid op runs its compiled kernel, and small helpers every op face shares."""

from __future__ import annotations

from typing import Optional

import torch

from pid import _extension

# Element types the compiled kernels take.
KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def kernel_applies(use_kernel: bool, *tensors: torch.Tensor) -> bool:
    """Whether a face may call its compiled op for these inputs: the caller asks for it (`use_kernel`), the library
    is loaded, autograd is not recording through the inputs (the ops have no backward), and the inputs' device has
    kernels (the CPU always, CUDA when the library was built with them). Each face checks dtypes and shapes too."""
    if not (use_kernel and _extension.available()):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    device = tensors[0].device
    if device.type == "cuda":
        return _extension.has_cuda_kernels()
    return device.type == "cpu"


def unit_last(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dimension has unit stride (strided row views are fine), else a copy."""
    return t if t.size(-1) <= 1 or t.stride(-1) == 1 else t.contiguous()


def contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def check_one_device(op: str, **tensors: Optional[torch.Tensor]) -> None:
    """RuntimeError naming `op` unless every given tensor is on one device, as the compiled ops' own checks say. The
    faces and the fake kernels call it: a meta tensor among CPU ones would otherwise reach an op's fake kernel and
    come back as an uninitialised CPU tensor."""
    devices = [(name, t.device) for name, t in tensors.items() if t is not None]
    first_name, first = devices[0]
    for name, device in devices[1:]:
        if device != first:
            raise RuntimeError(f"{op}: all inputs must be on {first_name}'s device {first}, but {name} is on {device}")
