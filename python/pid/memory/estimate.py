"""Peak memory of a decode before it runs: the weights, what the decode keeps for its whole duration, and its largest
transient stage, per rank when the decode is split across processes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from ..config import PidConfig
from ..flops import TEXT_TOKENS


@functools.lru_cache(maxsize=32)
def _param_counts(cfg: PidConfig) -> tuple[int, int, int]:
    """Parameters of the network a config builds: all of them, the weights of the Linears the fp8 regime quantises,
    and their output channels (one scale each). Counted on the meta device, once per config."""
    import torch

    from ..nn import PidNet
    from ..nn.fp8 import fp8_linear_names

    with torch.device("meta"):
        net = PidNet(cfg)
    linears = [net.get_submodule(name) for name in fp8_linear_names(net)]
    return (sum(p.numel() for p in net.parameters()), sum(m.weight.numel() for m in linears),
            sum(m.out_features for m in linears))


def weight_bytes(cfg: PidConfig, precision: str) -> int:
    """Bytes of a regime's network weights: float32 ("float32", "reference"), bf16 ("fast"), and in "fp8" bf16 but
    for the quantised Linears' weights, 1 byte each plus a float32 scale per output channel."""
    total, fp8_weights, fp8_scales = _param_counts(cfg)
    if precision == "fp8":
        return (total - fp8_weights) * 2 + fp8_weights + fp8_scales * 4
    return total * (2 if precision == "fast" else 4)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: the weights, the tensors a decode keeps for its whole duration, the largest transient stage."""

    weights: int
    persistent: int
    transient: int
    stage: str  # which stage sets the transient peak

    @property
    def peak(self) -> int:
        return self.weights + self.persistent + self.transient

    def __str__(self) -> str:
        gib = 2.0**30
        return (f"peak {self.peak / gib:.2f} GiB = weights {self.weights / gib:.2f} + kept {self.persistent / gib:.2f}"
                f" + {self.stage} {self.transient / gib:.2f}")


def _pixel_patch_bytes(cfg: PidConfig, act: int) -> int:
    """Live bytes per patch at the peak of a pixel block (inside the MLP of its second half): the block input
    and its update, the adaLN output (6 chunks), the modulated MLP input and the MLP hidden before and after GELU
    (the pixel stream is in the matrix products' dtype: bf16 under autocast)."""
    p2, c = cfg.patch_size**2, cfg.pixel_hidden_size
    return p2 * (c * act * 3 + 6 * c * act + 2 * 4 * c * act)


def _final_patch_bytes(cfg: PidConfig, act: int) -> int:
    """Live bytes per patch in the final layer: the pixel tokens, the normalised and weighted tokens (float32),
    and under autocast the bf16 copy its Linear reads."""
    return cfg.patch_size**2 * cfg.pixel_hidden_size * (3 * 4 + (2 if act == 2 else 0))


def _mmdit_mlp_token_bytes(cfg: PidConfig, act: int) -> int:
    """Live bytes per image token at the peak of an MMDiT block's feed-forward: residual and its update (float32),
    the modulated input (float32), the w1 and w3 outputs and their SiLU product."""
    return cfg.hidden_size * 4 * 3 + 3 * cfg.mlp_hidden_size * act


def pixel_chunk_for_budget(cfg: PidConfig, budget_bytes: int, precision: str = "fast") -> int:
    """Patches per chunk such that a chunk's pixel-stage work fits in budget_bytes."""
    act = 4 if precision == "float32" else 2
    return max(1, int(budget_bytes // _pixel_patch_bytes(cfg, act)))


def estimate_memory(variant_or_config, height: int, width: int, batch: int = 1, precision: str = "fast",
                    pixel_chunk: Optional[int] = None, txt_len: int = TEXT_TOKENS, *,
                    token_chunk: Optional[int] = None, keep_gate_features: bool = True, world_size: int = 1,
                    parallel: str = "sequence") -> MemoryEstimate:
    """Peak memory of `decode` at height × width, before running it (of each rank with `world_size` > 1).
    `variant_or_config`: a variant name (as `pid.get_variant` takes), a Variant or a PidConfig; `precision` as in
    `pid.load` ("float32", "reference", "fast", "fp8"); `pixel_chunk`, `token_chunk` and `keep_gate_features` as in
    `decode` / `ExecutionPlan` (None: unchunked); `parallel` "sequence" (the image tokens split across
    `world_size` ranks) or "data" (the samples split). For a network without gradients, as `pid.load` makes it:
    under autocast, parameters that require grad keep a bf16 copy of each weight in autocast's cache."""
    if isinstance(variant_or_config, str):
        from ..variants import get_variant

        variant_or_config = get_variant(variant_or_config)
    cfg = getattr(variant_or_config, "config", variant_or_config)
    if world_size < 1 or parallel not in ("sequence", "data"):
        raise ValueError(f"world_size must be >= 1 and parallel 'sequence' or 'data', got {world_size}, {parallel!r}")
    act = 4 if precision == "float32" else 2  # matrix-product outputs: float32, or bf16 under autocast
    weights = weight_bytes(cfg, precision)
    D, p2, c = cfg.hidden_size, cfg.patch_size**2, cfg.pixel_hidden_size
    grid = (height // cfg.patch_size) * (width // cfg.patch_size)
    sp = world_size > 1 and parallel == "sequence"
    if world_size > 1 and parallel == "data":
        batch = -(-batch // world_size)
    local = -(-grid // world_size) if sp else grid  # this rank's tokens per sample
    tokens = batch * local
    n_gates = cfg.num_gates + (1 if cfg.pit_lq_inject else 0)
    image = batch * 3 * height * width * 4
    if keep_gate_features:
        condition = tokens * n_gates * (D + cfg.gate_width) * act  # every gate's latent feature and logit half
    else:
        condition = tokens * cfg.lq_hidden_dim * act  # the latent CNN's features only
    # The initial noise (kept by the caller), the sampler state; with sequence parallelism the gathered velocity.
    persistent = condition + (3 if sp else 2) * image
    chunk = tokens if pixel_chunk is None else min(pixel_chunk, tokens)
    pixels_full = tokens * p2 * c * act  # the pixel stream, kept whole between chunked stages
    s_cond = tokens * D * 4
    if token_chunk is None or token_chunk >= local:
        mmdit = tokens * _mmdit_mlp_token_bytes(cfg, act)
    else:  # the stream, the attention's projected output, and one chunk's feed-forward
        mmdit = tokens * (D * 4 + D * act) + batch * token_chunk * _mmdit_mlp_token_bytes(cfg, act)
    # Attention: the stream, its modulated input, q/k/v and the output for all tokens of this rank's heads, the
    # projected output and one more row per token (the op's temporaries: fitted to the released network's tracked
    # peaks, tests/test_memory_budget.py); with sequence parallelism the all-to-all's send and receive buffers.
    attention = tokens * (D * 4 + D * act * 3) + batch * (grid + txt_len) * 4 * D // (world_size if sp else 1) * act
    if sp:
        attention += 2 * tokens * 3 * D * act
    elif token_chunk is None or token_chunk >= local:
        attention += tokens * 3 * D * act  # the whole q/k/v projection
    stages = {
        "pixel blocks": chunk * _pixel_patch_bytes(cfg, act) + (pixels_full + s_cond if chunk < tokens else 0),
        "final layer": chunk * _final_patch_bytes(cfg, act) + (pixels_full if chunk < tokens else 0),
        "MMDiT blocks": mmdit,
        "MMDiT attention": attention,
        "LQ trunk": batch * grid * cfg.lq_hidden_dim * 4 * 4,  # the whole latent on every rank
    }
    stage = max(stages, key=stages.get)
    return MemoryEstimate(weights, persistent, stages[stage], stage)
