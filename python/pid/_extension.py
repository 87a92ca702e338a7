"""Loads the compiled library ``pid._C``, which registers the ``torch.ops.pid.*`` kernels.

Importing this module tries once. When the library is missing or fails to load, ``available()`` is
False, ``LOAD_ERROR`` says why, and ``pid.ops`` uses the pure-PyTorch reference implementations.
Set ``PID_DISABLE_EXTENSION=1`` to force that fallback.

The CPU kernels are built in several instruction-set variants and one is chosen per process from the CPU's
features: ``cpu_capability()`` says which. ``PID_CPU_CAPABILITY=baseline|avx2|avx512`` forces one (read once, when
the library loads); one this build lacks or this CPU cannot run is a load failure like any other.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os

import torch

log = logging.getLogger(__name__)

LOAD_ERROR: str | None = None


def _load() -> bool:
    global LOAD_ERROR, _cpu_capability
    if os.environ.get("PID_DISABLE_EXTENSION", "") not in ("", "0"):
        LOAD_ERROR = "disabled by PID_DISABLE_EXTENSION"
        log.info("pid: compiled kernels %s; using the PyTorch reference", LOAD_ERROR)
        return False
    # find_spec rather than a path next to this file: in an editable install this file is in the
    # source tree while _C.so is in site-packages or the build directory.
    spec = importlib.util.find_spec("pid._C")
    if spec is None or not spec.origin:
        LOAD_ERROR = "pid/_C.so was not built (install with scripts/setup.sh)"
        log.warning("pid: %s; using the PyTorch reference", LOAD_ERROR)
        return False
    try:
        torch.ops.load_library(spec.origin)
    except (OSError, RuntimeError) as e:  # e.g. built against another torch: "undefined symbol: ..."
        detail = str(e)
        if isinstance(e, OSError):
            try:  # torch's message hides dlerror(); ask the dynamic loader directly
                ctypes.CDLL(spec.origin)
            except OSError as e2:
                detail = str(e2)
        LOAD_ERROR = f"failed to load {spec.origin}: {detail}"
        log.warning("pid: %s; using the PyTorch reference (rebuild: scripts/setup.sh)", LOAD_ERROR)
        return False
    try:  # chooses the CPU kernels' variant now, so that a bad PID_CPU_CAPABILITY is reported here
        _cpu_capability = torch.ops.pid.cpu_capability()
    except RuntimeError as e:
        LOAD_ERROR = str(e).splitlines()[0]
        log.warning("%s; using the PyTorch reference", LOAD_ERROR)
        return False
    return True


_cpu_capability: "str | None" = None


_loaded = _load()
# Computed once: a plain bool is also what torch.compile can trace through.
_cuda = _loaded and torch._C._dispatch_has_kernel_for_dispatch_key("pid::sigma_gate", "CUDA")


def available() -> bool:
    """True when the compiled library is loaded and ``torch.ops.pid.*`` has CPU kernels."""
    return _loaded


def cpu_capability() -> "str | None":
    """The CPU kernels' instruction-set variant in use: "baseline", "avx2", "avx512", or "native" (a
    PID_NATIVE_CPU=ON build); None when the compiled library is not loaded."""
    return _cpu_capability


def cpu_capabilities() -> "list[str]":
    """The CPU kernel variants this build has and this CPU can run, worst first (what PID_CPU_CAPABILITY accepts)."""
    return torch.ops.pid.cpu_capabilities().split(",") if _loaded else []


def has_cuda_kernels() -> bool:
    """True when the compiled library registered CUDA kernels (built against a CUDA torch)."""
    return _cuda


def missing_kernels(device_type: str) -> "str | None":
    """Why pid's compiled kernels cannot run on `device_type` in this process, or None when they can. Benchmarks
    check it first: without the kernels they would time the PyTorch reference against itself."""
    if not _loaded:
        return f"the compiled kernels are not loaded: {LOAD_ERROR}"
    if device_type == "cuda" and not _cuda:
        return "pid/_C was built without CUDA kernels (a CPU torch, or no nvcc): rebuild with scripts/setup.sh"
    if device_type not in ("cpu", "cuda"):
        return f"pid has no kernels for device type {device_type!r}"
    return None
