"""Python faces of the attention kernels (re-exported by ``pid.ops``): ``qk_norm_rope`` and ``attention``.

Each calls ``torch.ops.pid.*`` when the extension is loaded and the inputs suit the kernel, and
``pid.ops.reference`` (torch SDPA) otherwise. Global attention uses the backend chosen per device type
(``set_global_attention_backend``): on CPU the compiled kernel (measured faster than torch SDPA, see
docs/attention.md), on CUDA torch SDPA (measured faster than pid's first CUDA kernel on an H100), or
"auto": whichever of the two is faster on this machine, timed at the first call of each shape.
"""

from __future__ import annotations

import logging
import statistics
from typing import Callable, Optional

import torch

from pid.ops import _KERNEL_DTYPES, _use_kernel, reference  # defined before pid.ops imports this module

log = logging.getLogger(__name__)

_CUDA_HEAD_DIMS = (64, 72)

# Which implementation computes *global* attention, per device type: "kernel" (torch.ops.pid.attention),
# "sdpa" (torch.nn.functional.scaled_dot_product_attention) or "auto" (the faster, timed per shape).
# Windowed attention always uses the kernel when it can run (SDPA would need an explicit S x S mask).
_GLOBAL_BACKEND = {"cpu": "kernel", "cuda": "sdpa"}
_AUTO_CHOICE: dict[tuple, str] = {}  # "auto": (device, dtype, q shape, k shape) -> "kernel" or "sdpa"
_AUTO_CALLS = 3  # timed calls per backend (after one untimed)


def set_global_attention_backend(device_type: str, backend: str) -> None:
    """Choose what computes global attention on ``device_type`` ("cpu", "cuda"): "kernel", "sdpa", or "auto":
    for each (device, dtype, shape) the faster of the two, timed on the first call of that shape (one untimed
    and three timed calls of each, on the caller's inputs) and remembered. Setting a backend forgets them."""
    if backend not in ("kernel", "sdpa", "auto"):
        raise ValueError(f"backend must be 'kernel', 'sdpa' or 'auto', got {backend!r}")
    _GLOBAL_BACKEND[device_type] = backend
    _AUTO_CHOICE.clear()


def global_attention_backend(device_type: str) -> str:
    """The backend of global attention on ``device_type`` ("sdpa" for device types without a kernel)."""
    return _GLOBAL_BACKEND.get(device_type, "sdpa")


def attention_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in: autocast's when autocast is on for the device (as torch SDPA
    under autocast), else the promoted dtype of the inputs."""
    device_type = tensors[0].device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def qk_norm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    eps: float = 1e-6,
    *,
    out_dtype: Optional[torch.dtype] = None,
    out: Optional[tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = None,
    offsets: tuple[int, int] = (0, 0),
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-head q/k RMSNorm followed by interleaved-pair RoPE, read straight from the qkv projection.

    qkv: [B, N, 3, H, d] (e.g. ``linear(x).view(B, N, 3, H, d)``; any strides, no copy); q_weight,
    k_weight: [d]; rope: (cos, sin) tables [N, d/2] (float32) or None for no rotation. Numerics of
    the reference (``pid.ops.reference.qk_norm_rope``): mean of squares in float32, the normalised
    value cast to qkv's dtype, times the weight, RoPE in float32.

    Returns (q, k), each [B, H, N, d] in ``out_dtype`` (default: promote(qkv, weight), the reference's).
    With ``out=(q_buf, k_buf)`` (dense [B, H, rows, d] buffers; either may be None to skip it) the
    results are written to rows ``offsets[i]`` .. ``offsets[i] + N`` of the buffers, which are returned:
    two calls fill the two halves of one joint [text, image] buffer.
    """
    B, N, three, H, d = qkv.shape
    if three != 3:
        raise ValueError(f"qkv must have shape [B, N, 3, H, head_dim], got {list(qkv.shape)}")
    if out is None:
        dtype = out_dtype or torch.promote_types(qkv.dtype, q_weight.dtype)
        out = tuple(torch.empty(B, H, N, d, dtype=dtype, device=qkv.device) for _ in range(2))
        offsets = (0, 0)
    q_out, k_out = out
    outs = [t for t in (q_out, k_out) if t is not None]
    tables = () if rope is None else tuple(rope)
    if (
        outs
        and qkv.dtype in _KERNEL_DTYPES
        and q_weight.dtype == k_weight.dtype
        and q_weight.dtype in _KERNEL_DTYPES
        and all(t.dtype == torch.float32 for t in tables)
        and all(t.dtype in _KERNEL_DTYPES and t.dtype == outs[0].dtype and t.is_contiguous() for t in outs)
        and d % 2 == 0
        and _use_kernel(qkv, q_weight, k_weight, *tables, *outs)
    ):
        cos, sin = (t.contiguous() for t in tables) if tables else (None, None)
        torch.ops.pid.qk_norm_rope(
            qkv, q_weight.contiguous(), k_weight.contiguous(), cos, sin, eps, q_out, offsets[0], k_out, offsets[1]
        )
        return q_out, k_out
    q, k = reference.qk_norm_rope(qkv, q_weight, k_weight, rope, eps)
    for buf, val, off in ((q_out, q, offsets[0]), (k_out, k, offsets[1])):
        if buf is not None:
            buf[:, :, off : off + N].copy_(val)
    return q_out, k_out


def _check_window(q, k, window, grid, n_text):
    if window is None:
        return
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (or None for global attention), got {window!r}")
    if grid is None or len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"windowed attention needs grid=(grid_h, grid_w) of the image tokens, got {grid!r}")
    Sq, Sk = q.shape[-2], k.shape[-2]
    if Sk != n_text + grid[0] * grid[1]:
        raise ValueError(
            f"windowed attention: {Sk} keys, but n_text + grid_h * grid_w = {n_text} + {grid[0]} * {grid[1]} "
            f"= {n_text + grid[0] * grid[1]} (keys are [text tokens, then the row-major image grid])"
        )
    if Sq not in (Sk, Sk - n_text):
        raise ValueError(
            f"windowed attention: the queries must be all {Sk} tokens or the {Sk - n_text} image tokens, got {Sq}"
        )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: Optional[int] = None,
    grid: Optional[tuple[int, int]] = None,
    n_text: int = 0,
) -> torch.Tensor:
    """Exact softmax(q k^T / sqrt(d)) v over q [B, H, Sq, d], k, v [B, H, Sk, d] → [B, H, Sq, d].

    ``window=None``: global attention (the network's attention). ``window=w``: windowed attention over
    the joint sequence [n_text text tokens, then the ``grid`` = (grid_h, grid_w) row-major image
    grid], the queries being all tokens or only the image ones: an image query at (i, j) sees the text
    keys and the w x w image neighbourhood around (i, j), shifted to stay inside the grid; a text query
    sees every key. This is an opt-in speed/memory mode that **changes the model's function** (the
    network was trained with global attention); w >= max(grid) is global attention and computed as such.

    Computes in ``attention_dtype(q, k, v)`` (autocast's dtype when autocast is on). The compiled kernel
    returns a tensor laid out as [B, Sq, H, d] (merging heads is then a free view).
    """
    _check_window(q, k, window, grid, n_text)
    dtype = attention_dtype(q, k, v)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    if window is not None and window >= max(grid):
        window = None  # the window covers the grid: global attention, and exactly the global result
    if window is None:
        backend = global_attention_backend(q.device.type)
        if backend == "auto":
            backend = _auto_backend(q, k, v)
        if backend != "kernel":
            return reference.attention(q, k, v)
    if _kernel_can_run(q, k, v):
        return _kernel(q, k, v, window, grid, n_text)
    return reference.attention(q, k, v, window, grid, n_text)


def _kernel_can_run(q, k, v) -> bool:
    return (
        q.dtype in _KERNEL_DTYPES
        and k.shape[-2] > 0
        and (q.device.type != "cuda" or q.shape[-1] in _CUDA_HEAD_DIMS)
        and _use_kernel(q, k, v)
    )


def _kernel(q, k, v, window, grid, n_text):
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if window is None:
        return torch.ops.pid.attention(q, k, v, 0, 0, 0, 0)
    return torch.ops.pid.attention(q, k, v, window, grid[0], grid[1], n_text)


def _auto_backend(q, k, v) -> str:
    """"auto": the remembered choice for these inputs' shape, else both backends timed now. While a CUDA graph is
    being captured or torch.compile traces nothing can be timed: torch SDPA, not remembered."""
    if not _kernel_can_run(q, k, v):
        return "sdpa"
    key = (q.device, q.dtype, tuple(q.shape), tuple(k.shape))
    choice = _AUTO_CHOICE.get(key)
    if choice is not None:
        return choice
    if torch.compiler.is_compiling() or (q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return "sdpa"
    kernel_ms = _median_ms(lambda: _kernel(q, k, v, None, None, 0), q.device)
    sdpa_ms = _median_ms(lambda: reference.attention(q, k, v), q.device)
    choice = _AUTO_CHOICE[key] = "kernel" if kernel_ms < sdpa_ms else "sdpa"
    log.info("global attention %s %s q %s k %s: pid kernel %.3f ms, torch SDPA %.3f ms: using %s", q.device,
             str(q.dtype).removeprefix("torch."), list(q.shape), list(k.shape), kernel_ms, sdpa_ms, choice)
    return choice


def _median_ms(fn: Callable[[], object], device: torch.device) -> float:
    from pid.bench import timed  # here: pid.bench imports the network, which imports pid.ops

    fn()
    return statistics.median(timed(fn, _AUTO_CALLS, device)) * 1e3

