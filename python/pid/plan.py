"""`ExecutionPlan`: how a network call runs — precision regime, kernels, attention, windows, pixel chunks.

One immutable value, owned by the decoder (`PidDecoder.plan`) and passed down as an argument to every module of the
network, which reads what it needs from it; nothing else (no environment variable, thread-local or process-wide
switch, no attribute set on a module) decides what a call runs. `resolve_precision` is the one place where a
precision is chosen from the device and the `dtype=` spelling (`pid.load`); a decoder only checks it against its
weights (`check_weights_dtype`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

from .errors import PidError
from .ops import AttentionAutotune, default_attention_backend
from .ops._attention import check_backend
from .parallel import SequenceParallel

# float32:   float32 weights and math (golden parity; the default on CPUs without native bfloat16).
# reference: the official regime: float32 weights holding the bf16 values, bf16 autocast.
# fast:      bf16 weights (no float32 copy), bf16 autocast, float32 residual streams, the fused norm kernels (the
#            default on CUDA and on CPUs with AMX / AVX512-BF16: default_precision).
# fp8:       fast, with the large Linear layers as fp8 (e4m3) matrix products with per-row / per-channel scales
#            (pid.nn.fp8: which layers; pid.ops._fp8: the arithmetic). Opt-in; fp8 GPUs (sm89+), else emulated on
#            request only (PidDecoder's fp8_emulation).
PRECISIONS = ("float32", "reference", "fast", "fp8")
BF16_WEIGHTS = ("fast", "fp8")  # the regimes whose (unquantised) weights are bf16, with the fused norms
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class ExecutionPlan:
    """What a network call runs. Every field is explicit; `for_precision` builds the regimes' plans.

    precision     "float32" (no autocast), "reference", "fast" or "fp8" (bfloat16 autocast around the whole call).
    kernels       pid's compiled ops (every `pid.ops` face: attention, q/k norm + RoPE, gates, norms, sampler
                  steps) wherever they apply; False runs their PyTorch references.
    fused_norm    the blocks call the fused RMSNorm + modulation and gated-residual ops (and, on CUDA, a split
                  GroupNorm) instead of the reference's chains of elementwise ops. On in the fast and fp8 regimes.
    attention     global attention: "kernel", "sdpa", "fa4" (FlashAttention-4, sm90/sm100 with flash-attn-4), "auto"
                  (timed per shape, remembered in `autotune`), or None: each device's default
                  (`pid.ops.default_attention_backend`).
    window        windowed attention for the MMDiT image queries (w × w patch neighbourhoods), None: global, as
                  trained. `pixel_window` for the PiT patch attention. A window changes the model's function.
    pixel_chunk   patches per chunk of the pixel blocks (bounds their memory), None: all at once.
    token_chunk   image tokens per chunk of the MMDiT blocks' per-token work (q/k/v projection, residual updates,
                  feed-forward; bounds their memory), None: all at once.
    keep_gate_features  keep every gate's latent feature for the whole decode (the default), or only the latent
                  CNN's features, making each gate's feature again at each step (less memory; per step ~1-2 % more FLOPs
                  in v1.5, ~2-3 % in v1, whose per-channel gates also redo their logit half, at 2048²-1024²).
    autocast_cache  False while a CUDA graph is captured: autocast's cached weight casts must not outlive it.
    sequence_parallel  the image tokens split across the ranks of a process group (`pid.parallel`), None: one
                  process holds them all.
    autotune      the memory of attention="auto" (shared by the plans `replace` derives from this one).
    """

    precision: str = "float32"
    kernels: bool = True
    fused_norm: bool = False
    attention: Optional[str] = None
    window: Optional[int] = None
    pixel_window: Optional[int] = None
    pixel_chunk: Optional[int] = None
    token_chunk: Optional[int] = None
    keep_gate_features: bool = True
    autocast_cache: bool = True
    sequence_parallel: Optional[SequenceParallel] = None
    autotune: AttentionAutotune = field(default_factory=AttentionAutotune, compare=False, repr=False)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise PidError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_backend(self.attention)
        for name in ("window", "pixel_window", "pixel_chunk", "token_chunk"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise PidError(f"{name} must be a positive int (patches) or None, got {value!r}")

    @classmethod
    def for_precision(cls, precision: str, **fields) -> "ExecutionPlan":
        """The regime's plan: the fused norm kernels in the fast and fp8 regimes; `fields` set the rest."""
        return cls(precision=precision, **{"fused_norm": precision in BF16_WEIGHTS, **fields})

    def replace(self, **changes) -> "ExecutionPlan":
        return dataclasses.replace(self, **changes)

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The dtype matrix products run in under this plan's autocast (bfloat16), None without autocast."""
        return None if self.precision == "float32" else torch.bfloat16

    @property
    def gate_logit_dtype(self) -> torch.dtype:
        """The per-channel gates' logit GEMM (`pid.ops.sigma_gate`'s logit_dtype): bfloat16 in the fast and fp8
        regimes, rounded once as the official `content_proj` Linear does; float32 otherwise."""
        return torch.bfloat16 if self.precision in BF16_WEIGHTS else torch.float32

    def attention_backend(self, device_type: str) -> str:
        """The global-attention back end this plan runs on a device type."""
        return self.attention or default_attention_backend(device_type)

    def autocast(self, device_type: str):
        """The one autocast context of a network call: bfloat16 autocast for "reference", "fast" and "fp8", autocast
        off for "float32" (whatever the caller had on)."""
        if self.precision == "float32":
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=self.autocast_cache)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AMX or AVX512-BF16): PyTorch's bfloat16 matrix products
    then run well ahead of its float32 ones, and the fast regime is the default on the CPU too."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's (private) feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def default_precision(device: "str | torch.device", weights_dtype: Optional[torch.dtype] = None) -> str:
    """The regime a decoder takes when none is asked for: "fast" on CUDA and on CPUs with native bfloat16
    arithmetic, "float32" on other CPUs. Weights already in memory decide between their regimes: bfloat16 weights
    are "fast", float32 weights "reference" on CUDA and "float32" on the CPU. "float32" (the parity regime) is always
    one precision= away; "fp8" is never a default."""
    cuda = torch.device(device).type == "cuda"
    if weights_dtype == torch.bfloat16:
        return "fast"
    if weights_dtype == torch.float32:
        return "reference" if cuda else "float32"
    return "fast" if cuda or native_bf16_cpu() else "float32"


def resolve_precision(precision: Optional[str], dtype=None, device: "str | torch.device" = "cpu") -> str:
    """The precision regime `pid.load` gives a decoder, from its arguments: `precision` if given, else the one
    `dtype` implies (torch.bfloat16 → "fast"; float32 → the regime of float32 weights on the device), else
    `default_precision(device)`. Validated."""
    if dtype is not None:
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
        if dtype not in SUPPORTED_DTYPES:
            raise PidError(f"dtype {dtype} is not supported; use torch.float32 or torch.bfloat16, or choose "
                           f"precision= one of {PRECISIONS}")
        implied = default_precision(device, dtype)
        if precision in PRECISIONS and weights_dtype(precision) != dtype:
            raise PidError(f"dtype={dtype} and precision={precision!r} contradict each other: the {precision!r} "
                           f"regime holds {str(weights_dtype(precision)).removeprefix('torch.')} weights; pass only "
                           "precision=")
        precision = precision or implied
    if precision is None:
        precision = default_precision(device)
    if precision not in PRECISIONS:
        raise PidError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def weights_dtype(precision: str) -> torch.dtype:
    """The dtype a regime's network weights are loaded in: bfloat16 for "fast" and "fp8" (whose large Linears are
    then quantised from them), float32 for "float32" and "reference"."""
    return torch.bfloat16 if precision in BF16_WEIGHTS else torch.float32


def check_weights_dtype(precision: str, held: torch.dtype) -> str:
    """`precision` if the network's weights hold what it runs on (the fast and fp8 regimes bfloat16 weights, the
    others float32), else PidError; a decoder's precision is resolved once, by `pid.load` (or from the weights
    themselves, `default_precision`), and only checked here."""
    if precision not in PRECISIONS:
        raise PidError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if held != weights_dtype(precision):
        raise PidError(f"precision {precision!r} needs {'bf16' if precision in BF16_WEIGHTS else 'float32'} weights, "
                       f"the network holds {held}: convert it with net.to(...) or use pid.load(precision=...)")
    return precision
