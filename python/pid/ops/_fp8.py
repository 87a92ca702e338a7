"""fp8 (e4m3) matrix products with scales: the arithmetic of the "fp8" precision regime (`pid.nn.fp8`).

y = x Wᵀ + b with x quantised per row and W per output channel (a column of Wᵀ), each to float8_e4m3fn:

    s_x[m] = max_k |x[m, k]| / 448        x_q[m, k] = e4m3(x[m, k] / s_x[m])      (448: e4m3's largest finite value)
    s_w[n] = max_k |W[n, k]| / 448        W_q[n, k] = e4m3(W[n, k] / s_w[n])
    y[m, n] = s_x[m] · s_w[n] · Σ_k x_q[m, k] W_q[n, k] + b[n]

e4m3(·) rounds to the nearest e4m3 value, ties to even, after saturating at ±448 (a quotient can pass 448 by an
ulp of float32; e4m3fn has no infinity, and torch's cast turns overflow into NaN). A row of zeros gets the scale 1
(its q is all zeros). The sum of products runs in float32: on CUDA GPUs with fp8 tensor cores (compute capability
8.9+: Ada, Hopper, Blackwell) through `torch._scaled_mm` (row-wise scales, bf16 output); everywhere else it is
emulated exactly: the e4m3 values as float32 (exact), a float32 matrix product, then the same scales (the products
of two e4m3 values are exact in float32; only the summation order differs from a GPU's).
"""

from __future__ import annotations

from typing import Optional

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
_ALIGN = 16  # torch._scaled_mm: K and N multiples of 16


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_q, scale) for x [..., K]: one scale per row (float32 [..., 1], amax / 448, 1 for a zero row) and x / scale
    rounded to float8_e4m3fn (nearest, ties to even; saturated at ±448)."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    return (xf / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q [N, K] float8_e4m3fn, scale [N] float32) of a Linear's weight [N, K]: one scale per output channel."""
    q, scale = quantize_rows(weight)
    return q, scale.squeeze(-1)


def gemm_available(device: torch.device) -> bool:
    """Whether `device` has fp8 tensor cores that torch drives: CUDA of compute capability 8.9 or later."""
    device = torch.device(device)
    return (device.type == "cuda" and hasattr(torch, "_scaled_mm")
            and torch.cuda.get_device_capability(device) >= (8, 9))


def linear(x: torch.Tensor, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor],
           out_dtype: torch.dtype, *, emulate: Optional[bool] = None) -> torch.Tensor:
    """x [..., K] @ W_qᵀ scaled, + bias, in `out_dtype`: x quantised per row here (`quantize_rows`), W already
    (`quantize_weight`). `emulate`: None chooses (the fp8 GEMM where `_fp8_gemm_applies`, else the emulation);
    True always emulates (tests; the same numbers up to summation order)."""
    *lead, K = x.shape
    N = weight_q.shape[0]
    x_q, x_scale = quantize_rows(x.reshape(-1, K))
    if emulate is None:
        emulate = not _fp8_gemm_applies(x_q, weight_q, out_dtype)
    if emulate:
        with torch.autocast(x.device.type, enabled=False):
            acc = x_q.float() @ weight_q.float().t()
            y = acc.mul_(x_scale).mul_(weight_scale)
            if bias is not None:
                y.add_(bias.float())
        return y.to(out_dtype).reshape(*lead, N)
    y = torch._scaled_mm(x_q, weight_q.t(), scale_a=x_scale, scale_b=weight_scale.view(1, N),
                         bias=None if bias is None else bias.to(out_dtype), out_dtype=out_dtype)
    return y.reshape(*lead, N)


def gemm_shape_ok(in_features: int, out_features: int) -> bool:
    """Whether torch._scaled_mm takes a Linear of this shape (K and N multiples of 16); others are emulated, also on
    an fp8 GPU (the released network's are all multiples of 16; the golden networks' MLP width 170 is not)."""
    return in_features % _ALIGN == 0 and out_features % _ALIGN == 0


def _fp8_gemm_applies(x_q: torch.Tensor, weight_q: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """torch._scaled_mm with row-wise scales: an fp8 GPU, bf16 output, K and N multiples of 16."""
    return (out_dtype == torch.bfloat16 and gemm_shape_ok(x_q.shape[1], weight_q.shape[0]) and x_q.shape[0] > 0
            and gemm_available(x_q.device))
