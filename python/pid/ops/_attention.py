"""Faces of the attention family: ``qk_norm_rope`` and ``attention`` (csrc/include/pid/attention.h), and the memory of
the "auto" global-attention back end (``AttentionAutotune``).

Global attention has these back ends: pid's compiled kernel, torch SDPA, FlashAttention-4 (``_flash4``: CUDA sm90 /
sm100 with the flash-attn-4 package), or "auto" (the fastest of those that can take the shape, timed once). By default
each device type uses the one measured faster there (``default_attention_backend``; see docs/attention.md). Windowed
attention always runs the kernel when it can (SDPA would need an explicit S × S mask; FA4 is global only here).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import statistics
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch

from pid import _extension, timing
from pid.errors import PidError
from pid.ops import _flash4, reference
from pid.ops._face import KERNEL_DTYPES, check_one_device, kernel_applies

log = logging.getLogger(__name__)

_CUDA_HEAD_DIMS = (64, 72)
BACKENDS = ("kernel", "sdpa", "fa4", "auto")
TIMED = ("kernel", "sdpa", "fa4")  # what "auto" chooses among, in the order it times them
_LABELS = {"kernel": "pid kernel", "sdpa": "torch SDPA", "fa4": "FlashAttention-4"}
# Measured faster per device type: on the CPU pid's kernel; on CUDA torch SDPA (cuDNN / flash, against pid's
# first CUDA kernel on an H100). docs/attention.md has the numbers.
_DEFAULT_BACKEND = {"cpu": "kernel", "cuda": "sdpa"}


def default_attention_backend(device_type: str) -> str:
    """The global-attention back end used when none is given: "kernel" on the CPU, "sdpa" on CUDA and elsewhere."""
    return _DEFAULT_BACKEND.get(device_type, "sdpa")


def check_backend(backend: Optional[str], device: "torch.device | str | None" = None) -> Optional[str]:
    """`backend` itself when it names a global-attention back end (or is None, the device's default). With `device`,
    "fa4" must also be able to run there (PidError naming the fix otherwise)."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"attention backend must be 'kernel', 'sdpa', 'fa4' or 'auto' (or None: the device's "
                         f"default), got {backend!r}")
    if backend == _flash4.NAME and device is not None and (why := _flash4.device_problem(device)):
        raise PidError(f"attention='fa4': {why}; or choose attention='sdpa' or 'auto'")
    return backend


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
    use_kernel: bool = True,
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-head q/k RMSNorm followed by interleaved-pair RoPE, read straight from the qkv projection.

    qkv: [B, N, 3, H, d] (e.g. ``linear(x).view(B, N, 3, H, d)``; any strides, no copy); q_weight,
    k_weight: [d]; rope: (cos, sin) tables [N, d/2] (float32) or None for no rotation. Numerics of
    the reference (``pid.ops.reference.qk_norm_rope``): mean of squares in float32, the normalised
    value cast to qkv's dtype, times the weight, RoPE in float32.

    Returns (q, k), each [B, H, N, d] in ``out_dtype`` (default: promote(qkv, weight), the reference's).
    With ``out=(q_buf, k_buf)`` (dense [B, H, rows, d] buffers; either may be None to skip it) the
    results are written to rows ``offsets[i]`` .. ``offsets[i] + N`` of the buffers, which are returned:
    two calls fill the two halves of one joint [text, image] buffer. ``use_kernel=False`` runs the reference.
    """
    check_one_device("pid.ops.qk_norm_rope", qkv=qkv, q_weight=q_weight, k_weight=k_weight,
                     **({} if rope is None else {"cos": rope[0], "sin": rope[1]}),
                     **({} if out is None else {"q_out": out[0], "k_out": out[1]}))
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
        and qkv.dtype in KERNEL_DTYPES
        and q_weight.dtype == k_weight.dtype
        and q_weight.dtype in KERNEL_DTYPES
        and all(t.dtype == torch.float32 for t in tables)
        and all(t.dtype in KERNEL_DTYPES and t.dtype == outs[0].dtype and t.is_contiguous() for t in outs)
        and d % 2 == 0
        and kernel_applies(use_kernel, qkv, q_weight, k_weight, *tables, *outs)
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
    *,
    backend: Optional[str] = None,
    autotune: Optional["AttentionAutotune"] = None,
    use_kernel: bool = True,
) -> torch.Tensor:
    """Exact softmax(q k^T / sqrt(d)) v over q [B, H, Sq, d], k, v [B, H, Sk, d] → [B, H, Sq, d].

    ``window=None``: global attention (the network's attention). ``window=w``: windowed attention over
    the joint sequence [n_text text tokens, then the ``grid`` = (grid_h, grid_w) row-major image
    grid], the queries being all tokens or only the image ones: an image query at (i, j) sees the text
    keys and the w x w image neighbourhood around (i, j), shifted to stay inside the grid; a text query
    sees every key. This is an opt-in speed/memory mode that **changes the model's function** (the
    network was trained with global attention); w >= max(grid) is global attention and computed as such.

    Global attention runs ``backend``: "kernel" (pid's), "sdpa" (torch), "fa4" (FlashAttention-4; PidError naming the
    reason where it cannot take the inputs), "auto" (the fastest for this shape, as timed and remembered by
    ``autotune``), or None: ``default_attention_backend(q.device.type)``.
    ``use_kernel=False`` never runs pid's kernel (the PyTorch reference, with explicit masks when windowed).

    Computes in the promoted dtype of q, k and v, whatever autocast says. The compiled kernel returns a tensor laid
    out as [B, Sq, H, d] (merging heads is then a free view).
    """
    check_one_device("pid.ops.attention", q=q, k=k, v=v)
    _check_window(q, k, window, grid, n_text)
    check_backend(backend)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    if window is not None and window >= max(grid):
        window = None  # the window covers the grid: global attention, and exactly the global result
    if window is None:
        backend = backend or default_attention_backend(q.device.type)
        if backend == "auto":
            if autotune is None:
                raise ValueError("backend='auto' needs autotune=, a pid.ops.AttentionAutotune that remembers the "
                                 "timed choice per shape")
            backend = autotune.choose(q, k, v, use_kernel)
        if backend == "sdpa":
            return _sdpa(q, k, v)
        if backend == _flash4.NAME:
            if why := _flash4.input_problem(q, k, v):
                raise PidError(f"attention='fa4': {why}; or choose attention='sdpa' or 'auto'")
            return _flash4.attention(q, k, v)
    if _kernel_can_run(q, k, v, use_kernel):
        return _kernel(q, k, v, window, grid, n_text)
    return _sdpa(q, k, v, window, grid, n_text)


def _sdpa(q, k, v, window=None, grid=None, n_text=0):
    with torch.autocast(q.device.type, enabled=False):  # in the inputs' dtype, as the kernel
        return reference.attention(q, k, v, window, grid, n_text)


def _kernel_can_run(q, k, v, use_kernel: bool) -> bool:
    return (
        q.dtype in KERNEL_DTYPES
        and k.shape[-2] > 0
        and (q.device.type != "cuda" or q.shape[-1] in _CUDA_HEAD_DIMS)
        and kernel_applies(use_kernel, q, k, v)
    )


def _kernel(q, k, v, window, grid, n_text):
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if window is None:
        return torch.ops.pid.attention(q, k, v, 0, 0, 0, 0)
    return torch.ops.pid.attention(q, k, v, window, grid[0], grid[1], n_text)


class AttentionAutotune:
    """The memory of the "auto" global-attention back end: for each (device, dtype, q shape, k shape), whichever of
    its candidates (`candidates`: pid's kernel, torch SDPA, FlashAttention-4 where each can take the inputs) was
    fastest, timed on the first call of that shape (one untimed and ``calls`` timed calls of each, interleaved, on the
    caller's inputs; the medians decide).

    It keeps at most ``max_shapes`` shapes in memory (the least recently used is forgotten). With ``path`` (a JSON
    file; `default_path()` is the machine's) the choices also outlive the process: keyed by the device's name, the
    torch and pid versions, dtype and shapes, so a new process, or a new decoder, does not time again, and a new
    GPU, torch or pid does, and so does a new set of candidates (FA4 installed). Its owner sets its scope: a PidDecoder keeps one for its lifetime, in its
    ExecutionPlan. ``timer(fn, device) -> seconds`` replaces the measurement (tests)."""

    def __init__(self, calls: int = 3, max_shapes: int = 64,
                 timer: Optional[Callable[[Callable[[], object], torch.device], float]] = None,
                 path: "str | os.PathLike | None" = None):
        self.calls = calls
        self.max_shapes = max_shapes
        self.path = None if path is None else Path(path)
        self._timer = timer
        self._choices: OrderedDict[tuple, str] = OrderedDict()
        self._on_disk: Optional[dict[str, str]] = None  # read at the first lookup

    @staticmethod
    def default_path() -> Path:
        """The machine's file of timed choices: `pid_cache_dir()/attention.json`."""
        from pid.cache_dir import pid_cache_dir

        return pid_cache_dir() / "attention.json"

    def __len__(self) -> int:
        return len(self._choices)

    def __repr__(self) -> str:
        return f"AttentionAutotune({len(self)} shapes{f', {self.path}' if self.path else ''})"

    def candidates(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_kernel: bool = True) -> list[str]:
        """The back ends "auto" chooses among for these inputs, in the order they are timed: pid's kernel where it
        can take them, torch SDPA always, FlashAttention-4 where it can run (CUDA sm90/sm100, the package, bf16/fp16,
        its head dims)."""
        out = ["kernel"] if _kernel_can_run(q, k, v, use_kernel) else []
        out.append("sdpa")
        if _flash4.can_run(q, k, v):
            out.append(_flash4.NAME)
        return out

    def choose(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_kernel: bool = True) -> str:
        """One of `candidates` for these inputs: remembered (in memory, else on disk), else timed now. With one
        candidate (SDPA) nothing is timed; while a CUDA graph is captured or torch.compile traces, nothing can be
        timed: SDPA, not remembered."""
        candidates = self.candidates(q, k, v, use_kernel)
        if len(candidates) == 1:
            return candidates[0]
        key = (q.device, q.dtype, tuple(q.shape), tuple(k.shape), tuple(candidates))
        choice = self._choices.get(key) or self._from_disk(key)
        if choice in candidates:
            self._remember(key, choice)
            return choice
        if torch.compiler.is_compiling() or (q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return "sdpa"
        calls = {"kernel": lambda: _kernel(q, k, v, None, None, 0), "sdpa": lambda: _sdpa(q, k, v),
                 _flash4.NAME: lambda: _flash4.attention(q, k, v)}
        seconds = self._median_seconds([calls[c] for c in candidates], q.device)
        timed = dict(zip(candidates, seconds))
        choice = min(candidates, key=lambda c: (timed[c], c != "sdpa"))  # a tie: SDPA
        self._remember(key, choice)
        self._to_disk(key, choice)
        log.info("global attention %s %s q %s k %s: %s: using %s", q.device, str(q.dtype).removeprefix("torch."),
                 list(q.shape), list(k.shape),
                 ", ".join(f"{_LABELS[c]} {s * 1e3:.3f} ms" for c, s in timed.items()), choice)
        return choice

    def _remember(self, key: tuple, choice: str) -> None:
        self._choices[key] = choice
        self._choices.move_to_end(key)
        if len(self._choices) > self.max_shapes:
            self._choices.popitem(last=False)

    def _median_seconds(self, fns: list[Callable[[], object]], device: torch.device) -> list[float]:
        if self._timer is not None:
            return [self._timer(fn, device) for fn in fns]
        return [statistics.median(times) for times in timing.time_calls(fns, device, self.calls, warmup=1)]

    # ---- the file: {"<device name> | torch <v> | pid <v> | <dtype> | q [..] | k [..] | among <candidates>": choice}
    @staticmethod
    def _disk_key(key: tuple) -> str:
        from pid._version import __version__

        device, dtype, q_shape, k_shape, candidates = key
        return (f"{_device_name(device)} | torch {torch.__version__} | pid {__version__} | "
                f"{str(dtype).removeprefix('torch.')} | q {list(q_shape)} | k {list(k_shape)} | "
                f"among {', '.join(candidates)}")

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return {str(k): v for k, v in data.items() if v in TIMED}
        except (OSError, ValueError) as e:
            log.warning("ignoring the attention timings in %s (%s); timing again", self.path, e)
            return {}

    def _from_disk(self, key: tuple) -> Optional[str]:
        if self.path is None:
            return None
        if self._on_disk is None:
            self._on_disk = self._read()
        return self._on_disk.get(self._disk_key(key))

    def _to_disk(self, key: tuple, choice: str) -> None:
        if self.path is None:
            return
        from pid.atomic import atomic_path

        data = {**self._read(), self._disk_key(key): choice}  # other processes may have written meanwhile
        self._on_disk = data
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        except OSError as e:
            log.warning("cannot keep the attention timings in %s (%s); they stay in memory", self.path, e)


@functools.lru_cache(maxsize=None)
def _device_name(device: torch.device) -> str:
    """The hardware a timing belongs to: the GPU's name, or the CPU's model and vector capability."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        except OSError:
            pass
        return f"{model} ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    return device.type


if _extension.available():

    @torch.library.register_fake("pid::qk_norm_rope")
    def _qk_norm_rope_fake(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset):
        check_one_device("pid::qk_norm_rope", qkv=qkv, q_weight=q_weight, k_weight=k_weight, cos=cos, sin=sin,
                         q_out=q_out, k_out=k_out)
        torch._check(qkv.dim() == 5, lambda: f"pid::qk_norm_rope: qkv must be [B, N, 3, H, d], got {list(qkv.shape)}")
        return None

    @torch.library.register_fake("pid::attention")
    def _attention_fake(q, k, v, window, grid_h, grid_w, n_text):
        check_one_device("pid::attention", q=q, k=k, v=v)
        torch._check(q.dim() == 4, lambda: f"pid::attention: q must be [B, H, Sq, d], got {list(q.shape)}")
        B, H, Sq, d = q.shape
        return q.new_empty((B, Sq, H, d)).permute(0, 2, 1, 3)  # the kernel's [B, Sq, H, d] layout
