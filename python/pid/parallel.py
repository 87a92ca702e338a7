"""Decoding on several processes with `torch.distributed` (NCCL on GPUs, gloo on CPUs).

Two ways to split one decode across the ranks of a process group:

* sequence parallelism (`SequenceParallel`): every rank holds a contiguous slice of the image tokens (the patch
  grid in row-major order, padded at the end to a multiple of the world size) and of their pixel patches. The
  caption's tokens, the timestep work and the sampler state stay whole on every rank. Everything the network does
  per token runs on the local slice; attention swaps the sequence split for a head split (Ulysses: one all-to-all
  before, one after), so each rank attends over the whole sequence for its share of the heads, exactly as a single
  process does. The velocity is gathered after each network call, and every rank runs the sampler step on the
  whole image with the same noise.
* data parallelism (`DataParallel`): the samples of a batch are split across the ranks, each decodes its own, and
  the images are gathered on every rank.

Every rank calls `decode` with the same arguments: rank 0's inputs and noise are broadcast (`share_inputs`), and a
check that fails on one rank fails on all of them (`on_every_rank`), so no rank is left waiting in a collective.

The heads of both attention layers (24 in the MMDiT blocks, 16 in the pixel blocks of the released networks) must
divide among the ranks: 2, 4 or 8 ranks for the released networks.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .errors import PidError

log = logging.getLogger(__name__)

MODES = ("sequence", "data")


def _dist():
    import torch.distributed as dist

    if not dist.is_available():
        raise PidError("this torch build has no torch.distributed; install a standard torch build to decode on "
                       "several processes")
    return dist


@dataclass(frozen=True)
class TokenShard:
    """One rank's slice [start, stop) of `total` tokens, padded to `local` tokens (the same on every rank)."""

    total: int
    start: int
    stop: int
    local: int

    @property
    def real(self) -> int:
        """Tokens of this rank's slice that exist (the rest is padding at the end of the last ranks)."""
        return max(0, self.stop - self.start)


@dataclass(frozen=True)
class ProcessGroupInfo:
    """A torch.distributed process group with this process's rank in it."""

    rank: int
    world_size: int
    group: Any = field(default=None, compare=False, hash=False, repr=False)  # None: the default group

    @classmethod
    def current(cls, group=None) -> "ProcessGroupInfo":
        dist = _dist()
        if not dist.is_initialized():
            raise PidError("parallel decoding needs torch.distributed initialised: launch with torchrun (the pid CLI "
                           "initialises it from torchrun's environment) or call torch.distributed."
                           "init_process_group() first")
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    mode = "sequence"  # how `pid.estimate_memory` (parallel=) splits a decode of this group

    def collective_device(self, device: torch.device) -> torch.device:
        """Where small tensors for a collective go: the decoder's GPU for NCCL, the CPU for gloo."""
        return device if _dist().get_backend(self.group) == "nccl" else torch.device("cpu")

    def share_inputs(self, inputs, time_conds: list, generator: torch.Generator, settings, device: torch.device):
        """(inputs, time conditions, whole latent): what this rank decodes, from rank 0's inputs and noise
        (`DecodeInputs`, received into new tensors on the other ranks: the callers' tensors are left as they were),
        and rank 0's latent of the whole batch (what an error about the decode names)."""
        dist = _dist()
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0

        def bcast(t):
            t = t.contiguous() if self.rank == 0 else torch.empty_like(t, memory_format=torch.contiguous_format)
            dist.broadcast(t, src=src, group=self.group)
            return t
        inputs = inputs.map(bcast)
        return inputs, time_conds, inputs.latent

    def gather_images(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        """The whole batch's images on every rank from what this rank decoded."""
        return images


@dataclass(frozen=True)
class SequenceParallel(ProcessGroupInfo):
    """The image tokens of every network call split across the ranks of a process group (see the module docstring).
    Part of `ExecutionPlan` (`plan.sequence_parallel`): the network's modules shard, exchange and gather through it."""

    def share_inputs(self, inputs, time_conds: list, generator: torch.Generator, settings, device: torch.device):
        """Rank 0's inputs on every rank; every rank draws the student's re-noising from its own generator, so the
        generators must agree (checked) unless the draws are given."""
        shared = super().share_inputs(inputs, time_conds, generator, settings, device)
        if settings.name == "student" and shared[0].step_noises is None:
            self._check_same_generator(generator, device)
        return shared

    def _check_same_generator(self, generator: torch.Generator, device: torch.device) -> None:
        digest = hashlib.sha256(generator.get_state().cpu().numpy().tobytes()).digest()
        digest = torch.tensor([int.from_bytes(digest[i:i + 8], "little", signed=True) for i in range(0, 32, 8)])
        device = self.collective_device(device)
        digests = [torch.empty_like(digest, device=device) for _ in range(self.world_size)]
        _dist().all_gather(digests, digest.to(device), group=self.group)
        if any(not torch.equal(d, digests[0]) for d in digests):
            raise PidError("the ranks' random generators differ, so their re-noising would too: pass the same seed (or "
                           "a generator in the same state, or step_noises) on every rank")

    def check_heads(self, *head_counts: int) -> None:
        for heads in head_counts:
            if heads % self.world_size:
                raise PidError(f"sequence parallelism splits the attention heads across the ranks, but {heads} heads "
                               f"do not divide among {self.world_size} ranks: use a world size that divides "
                               f"{', '.join(map(str, head_counts))} (e.g. 2, 4 or 8 for the released networks)")

    def shard(self, tokens: int) -> TokenShard:
        """This rank's slice of `tokens` tokens (row-major patches)."""
        local = -(-tokens // self.world_size)
        start = min(tokens, self.rank * local)
        return TokenShard(tokens, start, min(tokens, start + local), local)

    # ---- slicing whole tensors
    def take(self, x: torch.Tensor, shard: TokenShard, dim: int = 1, first: int = 0) -> torch.Tensor:
        """This rank's tokens of x (tokens along `dim`, x holding tokens `first`, `first` + 1, ...: all of them, or
        the whole patch rows that hold the shard's), zero-padded to `shard.local`."""
        part = x.narrow(dim, shard.start - first if shard.real else 0, shard.real)
        missing = shard.local - shard.real
        if missing == 0:
            return part
        pad = list(part.shape)
        pad[dim] = missing
        return torch.cat([part, part.new_zeros(pad)], dim=dim)

    # ---- collectives (inference only: no autograd through them)
    def gather_tokens(self, x: torch.Tensor, shard: TokenShard) -> torch.Tensor:
        """[B, local, ...] on every rank → [B, total, ...] on every rank."""
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        _dist().all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)[:, :shard.total]

    def sequence_to_heads(self, qkv: torch.Tensor, shard: TokenShard) -> torch.Tensor:
        """The local tokens' projections [B, local, 3, H, d] → all tokens for this rank's H/N heads [B, total, 3,
        H/N, d] (an all-to-all: rank j sends its tokens' head group i to rank i)."""
        B, n, three, H, d = qkv.shape
        N = self.world_size
        send = qkv.reshape(B, n, three, N, H // N, d).permute(3, 0, 1, 2, 4, 5).contiguous()
        recv = torch.empty_like(send)
        _dist().all_to_all_single(recv, send, group=self.group)
        # recv[j] = rank j's tokens for this rank's heads → [B, N·local, 3, H/N, d]
        return recv.permute(1, 0, 2, 3, 4, 5).reshape(B, N * n, three, H // N, d)[:, :shard.total]

    def heads_to_sequence(self, out: torch.Tensor, shard: TokenShard) -> torch.Tensor:
        """Attention output of this rank's heads for all tokens [B, H/N, total, d] → the local tokens with every
        head, merged [B, local, H·d] (the inverse all-to-all)."""
        B, h, total, d = out.shape
        N, n = self.world_size, shard.local
        if total < N * n:
            out = torch.cat([out, out.new_zeros(B, h, N * n - total, d)], dim=2)
        send = out.reshape(B, h, N, n, d).permute(2, 0, 3, 1, 4).contiguous()  # [dest rank, B, local, H/N, d]
        recv = torch.empty_like(send)
        _dist().all_to_all_single(recv, send, group=self.group)
        # recv[j] = head group j of my tokens → [B, local, N, H/N, d]
        return recv.permute(1, 2, 0, 3, 4).reshape(B, n, N * h * d)

    def gather_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Replicated tokens (the caption), this rank's heads [B, H/N, n, d] → every head, merged [B, n, H·d]."""
        B, h, n, d = out.shape
        parts = [torch.empty(B, h, n, d, dtype=out.dtype, device=out.device) for _ in range(self.world_size)]
        _dist().all_gather(parts, out.contiguous(), group=self.group)
        return torch.stack(parts, dim=1).permute(0, 3, 1, 2, 4).reshape(B, n, self.world_size * h * d)

    def heads(self, H: int) -> slice:
        """This rank's heads of H."""
        h = H // self.world_size
        return slice(self.rank * h, (self.rank + 1) * h)


@dataclass(frozen=True)
class DataParallel(ProcessGroupInfo):
    """The samples of a batch split across the ranks of a process group."""

    mode = "data"

    def share_inputs(self, inputs, time_conds: list, generator: torch.Generator, settings, device: torch.device):
        """Rank 0's inputs (the whole batch's noise draws included), then this rank's samples of them: copies, so the
        whole batch's tensors are not kept alive by views."""
        inputs, time_conds, whole_latent = super().share_inputs(inputs, time_conds, generator, settings, device)
        start, stop, _ = self.samples(inputs.noise.shape[0])
        return inputs.map(lambda t: t[start:stop].clone()), [c.take(start, stop) for c in time_conds], whole_latent

    def gather_images(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        return self.gather_samples(images, batch)

    def samples(self, batch: int) -> tuple[int, int, int]:
        """(start, stop, per_rank): this rank's samples [start, stop) of `batch`, padded to `per_rank` each."""
        per_rank = -(-batch // self.world_size)
        start = min(batch, self.rank * per_rank)
        return start, min(batch, start + per_rank), per_rank

    def gather_samples(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """This rank's samples [n, ...] (n ≤ per_rank) → all samples [batch, ...] on every rank."""
        _, _, per_rank = self.samples(batch)
        if x.shape[0] < per_rank:
            x = torch.cat([x, x.new_zeros(per_rank - x.shape[0], *x.shape[1:])])
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        _dist().all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts)[:batch]


def parallel_info(mode: Optional[str], group=None) -> "SequenceParallel | DataParallel | None":
    """The `parallel=` argument of `pid.load`: None (one process), "sequence" or "data", over `group` (None: the
    default process group, which must be initialised)."""
    if mode is None:
        if group is not None:
            raise PidError("group= is only used with parallel='sequence' or 'data'")
        return None
    if mode not in MODES:
        raise PidError(f"parallel must be 'sequence', 'data' or None, got {mode!r}")
    info = ProcessGroupInfo.current(group)
    cls = SequenceParallel if mode == "sequence" else DataParallel
    return cls(info.rank, info.world_size, group)


def world_of(parallel: "ProcessGroupInfo | None") -> tuple[int, str]:
    """(world size, "sequence" | "data") of a decoder's parallel decodes, as `pid.estimate_memory` takes them;
    (1, "sequence") for one process."""
    return (1, "sequence") if parallel is None else (parallel.world_size, parallel.mode)


def on_every_rank(parallel: "ProcessGroupInfo | None", device: torch.device, check) -> None:
    """Runs `check()`, which may raise PidError; with parallel decoding every rank learns whether any failed and all
    raise together (a rank that stopped alone would leave the others waiting in a collective)."""
    if parallel is None:
        return check()
    error = None
    try:
        check()
    except PidError as e:
        error = e
    failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=parallel.collective_device(device))
    _dist().all_reduce(failed, op=_dist().ReduceOp.MAX, group=parallel.group)
    if error is not None:
        raise error
    if int(failed.item()):
        raise PidError("another rank of this parallel decode refused it (its error is in its log); no rank decoded")


def shutdown() -> None:
    """Destroys the default process group if there is one (at the end of a CLI run)."""
    dist = _dist()
    if dist.is_initialized():
        dist.destroy_process_group()


def init_from_env(device_type: Optional[str] = None) -> tuple[int, int, torch.device]:
    """Initialises the default process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) unless it is initialised: NCCL when CUDA is available (each rank on cuda:LOCAL_RANK),
    else gloo. Returns (rank, world size, this rank's device)."""
    dist = _dist()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if not dist.is_initialized() and missing:
        raise PidError(f"--parallel needs a torchrun launch (missing {', '.join(missing)}): run "
                       "torchrun --nproc-per-node N -m pid decode ... --parallel sequence|data")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda and local_rank >= torch.cuda.device_count():
        raise PidError(f"rank with LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                       "use --nproc-per-node at most that, or --device cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device
