"""FlashAttention-4 (the `flash-attn-4` package, a CuTe-DSL JIT kernel for Hopper and Blackwell) as a global-attention
back end: when it can run, and the call.

It runs where the package imports, on a CUDA device of compute capability 9.x (sm90: H100, H200) or 10.x (sm100:
B200, GB200), with bfloat16 or float16 inputs and a head dim FA4 takes on both (a multiple of 8 from 8 to 128; the
network's are 64 and 72). Nothing here imports the package until a CUDA call asks for it (its import compiles
nothing but loads the CuTe DSL, about a second); the CPU never does.

    pip install 'pid-decoder[fa4]'        # flash-attn-4 and its CuTe DSL (nvidia-cutlass-dsl)
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Callable, Optional

import torch

NAME = "fa4"
DTYPES = (torch.bfloat16, torch.float16)
CAPABILITY_MAJORS = (9, 10)  # sm90 (Hopper), sm100 (Blackwell datacenter)
INSTALL = "pip install 'pid-decoder[fa4]' (flash-attn-4)"


def head_dim_supported(d: int) -> bool:
    """Head dims FA4 takes on sm90 and sm100 alike: multiples of 8 (16-byte rows of bf16) from 8 to 128."""
    return 8 <= d <= 128 and d % 8 == 0


def package_installed() -> bool:
    """Whether `flash_attn.cute` (flash-attn-4) can be found, without importing it."""
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):  # a `flash_attn` that is not a package, or a broken one
        return False


@functools.lru_cache(maxsize=None)
def _load() -> tuple[Optional[Callable], str]:
    """(flash_attn_func, "") once imported, else (None, why)."""
    if not package_installed():
        return None, f"the flash-attn-4 package is not installed: {INSTALL}"
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as e:  # an import of a JIT stack can fail in many ways (CUDA bindings, DSL libraries)
        return None, f"flash-attn-4 is installed but does not import ({type(e).__name__}: {e})"
    return flash_attn_func, ""


def function() -> Callable:
    """FA4's `flash_attn_func` (RuntimeError with the reason when it does not import)."""
    fn, why = _load()
    if fn is None:
        raise RuntimeError(why)
    return fn


def device_problem(device: torch.device) -> Optional[str]:
    """Why FA4 cannot run on `device` (None when it can): not CUDA, another GPU generation, or the package."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"FlashAttention-4 runs on CUDA GPUs of compute capability 9.x or 10.x (H100, H200, B200), not on {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in CAPABILITY_MAJORS:
        return (f"FlashAttention-4 runs on compute capability 9.x or 10.x (H100, H200, B200); "
                f"{torch.cuda.get_device_name(device)} is {major}.{minor}")
    return _load()[1] or None


def input_problem(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    """Why FA4 cannot take these inputs (None when it can): device, dtype, head dim, autograd."""
    why = device_problem(q.device)
    if why:
        return why
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"FlashAttention-4 takes bfloat16 or float16 q/k/v, got {q.dtype} (use precision='fast' or 'reference')"
    if not head_dim_supported(q.shape[-1]) or v.shape[-1] != q.shape[-1]:
        return f"FlashAttention-4 takes head dims that are multiples of 8 from 8 to 128, got {q.shape[-1]}"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return "pid calls FlashAttention-4 for inference only (autograd is recording through q, k or v)"
    return None


def can_run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether FA4 can take these inputs (an "auto" candidate)."""
    return input_problem(q, k, v) is None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q [B, H, Sq, d], k, v [B, H, Sk, d] through FA4, which takes [B, S, H, d]: the
    transposes are views (FA4 reads any layout whose rows are 16-byte aligned). Returns [B, H, Sq, d] laid out as
    [B, Sq, H, d], as pid's kernel does (merging heads is then a free view)."""
    fn = function()
    result = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=1.0 / math.sqrt(q.shape[-1]),
                causal=False)
    out = result[0] if isinstance(result, tuple) else result  # (out, lse) in flash-attn-4 4.0.0b40
    return out.transpose(1, 2)
