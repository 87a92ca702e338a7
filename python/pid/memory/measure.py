"""Peak memory measured: every tensor storage that ops allocate (any device), and what a new allocation can use."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Tracks the bytes of live tensor storages that ops create while active (on any device), and their peak.
    Storages that existed before (weights, inputs) are not counted. Exact for tensors; blind to workspaces an
    op allocates and frees internally."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Outputs that share an input's storage are views or in-place results: nothing was allocated.
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._sizes and key not in inputs:
                    self._sizes[key] = storage.nbytes()
                    self.live += self._sizes[key]
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def available_bytes(device: torch.device) -> "int | None":
    """Memory a new allocation can use on `device`: on CUDA the device's free memory plus what PyTorch's caching
    allocator holds unused; on the CPU the kernel's MemAvailable, capped by the memory cgroup's remaining limit where
    there is one (containers). None where it cannot be known (another OS or device type)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)  # PyTorch's allocator reuses what it holds but does not use
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:  # cgroup v2
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read())
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


# The error a failed allocation raises: torch.OutOfMemoryError from torch 2.5, torch.cuda.OutOfMemoryError before.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
