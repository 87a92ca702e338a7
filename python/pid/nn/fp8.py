"""The "fp8" precision regime's weights: the network's large Linear layers as fp8 (e4m3) matrix products with scales
(`Fp8Linear`, arithmetic in `pid.ops._fp8`); everything else as in the fast regime (bf16 weights, fused norms).

Quantised (`FP8_LINEARS`): the MMDiT blocks' Linears, both streams — the q/k/v projection, the output projection,
the SwiGLU feed-forward (w1, w3, w2): about 80 % of a decode's matrix-product FLOPs at 2048².
Kept in bf16:
  the PiT blocks' Linears (`PIT_LINEARS`: compress_to_attn, expand_from_attn, the patch attention's qkv and proj,
    the per-patch adaLN Linear), about 20 % of the matrix-product FLOPs but most of fp8's error: they write straight
    into the pixels. On the golden networks fp8 PSNR against the reference regime is ~42.5 dB with the MMDiT Linears
    only and ~30 dB with these too (the per-patch adaLN alone costs ~33 dB; benchmarks/RESULTS.md).
    `quantize_linears(net, PIT_LINEARS)` quantises them as well, for measurements;
  the per-pixel MLP (16 → 64 → 16 per pixel: memory-bound, so quantising its input would cost as much traffic as the
    fp8 product saves), the embedders and the final layer (small, at the network's input and output), the
    timestep-only adaLN Linears of the MMDiT blocks (0.4 B parameters, but one row per step, computed once per
    timestep), the latent CNN and the gates.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import PidError
from ..ops import _fp8
from .mmdit import MMDiTBlock
from .pit import PiTBlock

# Submodule paths, per block class, of the Linears the fp8 regime quantises; and of the PiT blocks' (not quantised
# by the regime: see above).
Layers = dict[type, tuple[str, ...]]
FP8_LINEARS: Layers = {
    MMDiTBlock: ("attn.qkv_x", "attn.qkv_y", "attn.proj_x", "attn.proj_y", "mlp_x.w1", "mlp_x.w3", "mlp_x.w2",
                 "mlp_y.w1", "mlp_y.w3", "mlp_y.w2"),
}
PIT_LINEARS: Layers = {
    PiTBlock: ("compress_to_attn", "expand_from_attn", "attn.qkv", "attn.proj", "adaLN_modulation.0"),
}


class Fp8Linear(nn.Module):
    """A Linear whose weight is float8_e4m3fn with one float32 scale per output channel (`weight_scale`), its bias
    bf16. Its input is quantised per row at each call; the output is in the autocast dtype (bf16 in the fp8 regime),
    else in the input's dtype. `emulate` (fixed when it is made): False, the fp8 GEMM where the device has one, else
    the exact emulation; True, always the emulation (`pid.load(..., fp8_emulation=True)`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, emulate: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=_fp8.E4M3, device=device),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones(out_features, device=device), requires_grad=False)
        self.bias = (nn.Parameter(torch.zeros(out_features, dtype=torch.bfloat16, device=device), requires_grad=False)
                     if bias else None)
        self.emulate = emulate

    @classmethod
    def from_linear(cls, linear: nn.Linear, emulate: bool = False) -> "Fp8Linear":
        """The fp8 form of `linear` (its weight quantised per output channel; bias rounded to bf16)."""
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device,
                  emulate=emulate)
        with torch.no_grad():
            q, scale = _fp8.quantize_weight(linear.weight)
            out.weight.copy_(q)
            out.weight_scale.copy_(scale)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def _apply(self, fn, recurse=True):
        """Moves between devices as any module, but keeps its dtypes under net.float() / .bfloat16() / .to(dtype):
        an fp8 weight cast to bf16 would no longer be an fp8 GEMM's operand, and a bf16 scale would round."""
        def keep_dtype(t):
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(out.device)
        return super()._apply(keep_dtype, recurse)

    def dequantized_weight(self) -> torch.Tensor:
        """W_q · s_w in float32 (what the products use; for tests and error estimates)."""
        return self.weight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        return _fp8.linear(x, self.weight, self.weight_scale, self.bias, out_dtype, emulate=True if self.emulate else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"float8_e4m3fn with per-channel scales")


def check_device(device: torch.device, emulation: bool = False) -> None:
    """PidError unless the fp8 regime can run well on `device` (fp8 tensor cores: CUDA compute capability 8.9+) or
    its emulation is asked for (`emulation`: the same arithmetic in float32 matrix products, exact but slower than
    the fast regime: for measuring the regime's quality, not for speed; on an fp8 GPU too, to compare with its
    fp8 GEMM)."""
    if emulation or _fp8.gemm_available(device):
        return
    device = torch.device(device)
    where = (f"{torch.cuda.get_device_name(device)} (compute capability "
             f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))})" if device.type == "cuda" else str(device))
    raise PidError(f"precision='fp8' needs fp8 tensor cores (a CUDA GPU of compute capability 8.9+: Ada, Hopper, "
                   f"Blackwell), not {where}: use precision='fast', or fp8_emulation=True to emulate it (slowly, for "
                   f"measuring its quality)")


def fp8_linear_names(net: nn.Module, layers: Optional[Layers] = None) -> list[str]:
    """The qualified names of the Linears of `net` that the fp8 regime quantises (`layers`, default `FP8_LINEARS`),
    whether they are quantised yet or not."""
    names = []
    for block_name, block in net.named_modules():
        for cls, paths in (FP8_LINEARS if layers is None else layers).items():
            if isinstance(block, cls):
                names += [f"{block_name}.{path}" for path in paths]
    return names


def quantize_linears(net: nn.Module, layers: Optional[Layers] = None, *, emulate: bool = False) -> nn.Module:
    """`net` with its `layers` (default `FP8_LINEARS`) replaced, in place, by `Fp8Linear`s quantised from their
    weights (already quantised ones are kept), emulating their products when `emulate`. Returns `net`."""
    for name in fp8_linear_names(net, layers):
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        linear = getattr(parent, child) if not child.isdigit() else parent[int(child)]
        if isinstance(linear, Fp8Linear):
            continue
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name} is a {type(linear).__name__}, not the nn.Linear the fp8 regime quantises")
        fp8 = Fp8Linear.from_linear(linear, emulate=emulate)
        if child.isdigit():
            parent[int(child)] = fp8
        else:
            setattr(parent, child, fp8)
    return net


def is_quantized(net: nn.Module, layers: Optional[Layers] = None) -> bool:
    """Whether every Linear of `layers` (default: those the fp8 regime quantises) is an Fp8Linear."""
    names = fp8_linear_names(net, layers)
    return bool(names) and all(isinstance(net.get_submodule(n), Fp8Linear) for n in names)
