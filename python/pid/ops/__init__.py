"""The Python face of every pid kernel: the compiled op when it can run, else the reference.

Each op here calls ``torch.ops.pid.<op>`` when the extension is loaded and supports the inputs'
device and dtype, and ``pid.ops.reference.<op>`` otherwise (also when autograd is recording, since
the compiled ops have no backward).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import torch

from pid import _extension
from pid.ops import reference

__all__ = [
    "sigma_gate",
    "sigma_gate_apply",
    "student_step",
    "dpm_step",
    "dpm_data_prediction",
    "qk_norm_rope",
    "attention",
    "attention_dtype",
    "set_global_attention_backend",
    "global_attention_backend",
    "rms_norm_modulate",
    "rms_norm_modulate_pixels",
    "gated_residual",
    "kernels_enabled",
    "reference",
]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


class _Setting(threading.local):
    kernels = True


_setting = _Setting()


@contextlib.contextmanager
def kernels_enabled(enabled: bool = True) -> Iterator[None]:
    """``with kernels_enabled(False):`` runs every op (in this thread) through its PyTorch reference, e.g. to time
    the reference implementation's eager path in the same process."""
    old, _setting.kernels = _setting.kernels, bool(enabled)
    try:
        yield
    finally:
        _setting.kernels = old


def _use_kernel(*tensors: torch.Tensor) -> bool:
    if not (_setting.kernels and _extension.available()):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    device = tensors[0].device
    if device.type == "cuda":
        return _extension.has_cuda_kernels()
    return device.type == "cpu"


def sigma_gate(
    x: torch.Tensor,
    lq: torch.Tensor,
    lq_logit: torch.Tensor,
    w_x: torch.Tensor,
    alpha_sigma: torch.Tensor,
) -> torch.Tensor:
    """Sigma-aware gate: ``x + sigmoid(x @ w_x.T + lq_logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D]; lq_logit: [B, L, G] with G = 1 (per token) or D (per token and channel);
    w_x: [G, D]; alpha_sigma: [B] float32. For the compiled kernels x, lq, lq_logit, w_x share one dtype
    (float32 or bfloat16), or x is float32 and the others bfloat16 (the fast path: its float32 image
    stream, bfloat16 weights and latent features). Math in float32; the result has x's dtype.

    G = 1 runs the fused kernel ``pid::sigma_gate`` (one pass: dot product and gated residual). G = D is a
    [B·L, D] × [D, D] GEMM: it runs as ``logit = addmm(lq_logit, x, w_x.T)`` on BLAS / cuBLAS, then the fused
    epilogue ``pid::sigma_gate_apply``. The GEMM is float32, except with a float32 x and bfloat16 weights under
    bfloat16 autocast (the fast path's v1 gates): there it is bfloat16 with a bfloat16 logit, as the official
    path's ``content_proj`` Linear (whose one rounding of the whole logit it keeps).
    """
    mixed = x.dtype == torch.float32 and lq.dtype == torch.bfloat16
    if (
        x.dtype in _KERNEL_DTYPES
        and lq.dtype == lq_logit.dtype == w_x.dtype
        and (lq.dtype == x.dtype or mixed)
        and alpha_sigma.dtype == torch.float32
        and _use_kernel(x, lq, lq_logit, w_x, alpha_sigma)
    ):
        if x.dim() == 3 and x.shape[-1] > 1 and lq_logit.shape == x.shape and w_x.shape == (x.shape[-1], x.shape[-1]):
            return _sigma_gate_per_dim(x, lq, lq_logit, w_x, alpha_sigma)
        # G = 1, and inputs of the wrong shape: the op's checks say what is wrong.
        return torch.ops.pid.sigma_gate(
            x.contiguous(), lq.contiguous(), lq_logit.contiguous(), w_x.contiguous(), alpha_sigma.contiguous()
        )
    return reference.sigma_gate(x, lq, lq_logit, w_x, alpha_sigma)


def _sigma_gate_per_dim(x, lq, lq_logit, w_x, alpha_sigma):
    B, L, D = x.shape
    dev = x.device.type
    if (
        x.dtype == torch.float32
        and lq.dtype == torch.bfloat16
        and torch.is_autocast_enabled(dev)
        and torch.get_autocast_dtype(dev) == torch.bfloat16
    ):
        # The official path's Linear: bfloat16 operands (x rounded, as autocast rounds it), bfloat16 logit.
        logit = torch.addmm(lq_logit.reshape(B * L, D), x.reshape(B * L, D), w_x.T)
    else:
        # float32 GEMM whatever autocast says: the gate's contract is float32 math (bf16 values are exact in it).
        with torch.autocast(dev, enabled=False):
            logit = torch.addmm(lq_logit.reshape(B * L, D).float(), x.reshape(B * L, D).float(), w_x.float().T)
    return torch.ops.pid.sigma_gate_apply(
        x.contiguous(), lq.contiguous(), logit.view(B, L, D), alpha_sigma.contiguous()
    )


def sigma_gate_apply(x: torch.Tensor, lq: torch.Tensor, logit: torch.Tensor, alpha_sigma: torch.Tensor) -> torch.Tensor:
    """The gate's epilogue for a precomputed logit: ``x + sigmoid(logit - alpha_sigma[b]) * lq``.

    x, lq: [B, L, D] (for the compiled kernels float32 or bfloat16, or a float32 x with a bfloat16 lq); logit:
    [B, L, G], G = 1 or D, float32 or lq's dtype; alpha_sigma: [B] float32. Math in float32; the result has x's
    dtype.
    """
    if (
        x.dtype in _KERNEL_DTYPES
        and (lq.dtype == x.dtype or (x.dtype == torch.float32 and lq.dtype == torch.bfloat16))
        and logit.dtype in (torch.float32, lq.dtype)
        and alpha_sigma.dtype == torch.float32
        and _use_kernel(x, lq, logit, alpha_sigma)
    ):
        return torch.ops.pid.sigma_gate_apply(x.contiguous(), lq.contiguous(), logit.contiguous(), alpha_sigma.contiguous())
    return reference.sigma_gate_apply(x, lq, logit, alpha_sigma)


# ---- sampler steps: one fused elementwise pass per step (pid/sampling.py calls these) -------------


def _sampler_kernel_ok(x: torch.Tensor, velocities, f32_tensors) -> bool:
    v = [t for t in velocities if t is not None]
    f32 = [t for t in f32_tensors if t is not None]
    return (
        x.dtype == torch.float32
        and v[0].dtype in _KERNEL_DTYPES
        and all(t.dtype == v[0].dtype for t in v)
        and all(t.dtype == torch.float32 for t in f32)
        and _use_kernel(x, *v, *f32)
    )


def _contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def student_step(
    x: torch.Tensor,
    v: torch.Tensor,
    eps: Optional[torch.Tensor],
    t: float,
    t_next: float,
    *,
    return_x0: bool = False,
):
    """One step of the distilled student sampler (pid.sampling.sample_student, spec §5.1).

    ``x0 = x − t·v`` in float64, rounded to float32; ``x_next = (1 − t_next)·x0 + t_next·eps`` in float32, or
    ``x_next = x0`` when ``eps`` is None (the last step). x, eps: float32; v: float32 or bfloat16, x's shape;
    t, t_next: the schedule's float32 entries (Python floats). Returns x_next, or ``(x_next, x0)``.
    """
    if _sampler_kernel_ok(x, [v], [eps]):
        x0 = torch.empty_like(x, memory_format=torch.contiguous_format) if return_x0 and eps is not None else None
        x_next = torch.ops.pid.student_step(x.contiguous(), v.contiguous(), _contiguous(eps), float(t), float(t_next), x0)
        if return_x0:
            return x_next, (x_next if x0 is None else x0)
        return x_next
    x_next, x0 = reference.student_step(x, v, eps, t, t_next)
    return (x_next, x0) if return_x0 else x_next


def dpm_data_prediction(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor] = None,
    *,
    guidance: float = 1.0,
    t: float,
) -> torch.Tensor:
    """DPM-Solver++ data prediction on the flow schedule: ``v = v_u + s·(v_c − v_u)`` (or v_c when v_u is None),
    ``ε̂ = (1 − t)·v + x``, ``D = (x − t·ε̂)/(1 − t)``, float32 in this order. x float32; v_c, v_u float32 or
    bfloat16 (one dtype); guidance s and t Python floats (rounded to float32)."""
    if _sampler_kernel_ok(x, [v_c, v_u], []):
        return torch.ops.pid.dpm_data_prediction(x.contiguous(), v_c.contiguous(), _contiguous(v_u), float(guidance), float(t))
    return reference.dpm_data_prediction(x, v_c, v_u, guidance, t)


def dpm_step(
    x: torch.Tensor,
    v_c: torch.Tensor,
    v_u: Optional[torch.Tensor],
    d_prev: Optional[torch.Tensor],
    *,
    guidance: float = 1.0,
    t: float,
    t_ratio: float,
    alpha_phi: float,
    half_alpha_phi: float = 0.0,
    inv_r: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step from x at time t, in one pass: ``D = dpm_data_prediction(x, v_c, v_u, t)``, then
    ``x_next = t_ratio·x − αφ·D`` and, at second order (``d_prev`` given), ``x_next −= 0.5αφ·((1/r)·(D − d_prev))``.
    The scalars are float32 values computed by the caller (see pid.sampling.sample_dpmpp_2m). Returns
    ``(x_next, D)``."""
    if _sampler_kernel_ok(x, [v_c, v_u], [d_prev]):
        return torch.ops.pid.dpm_step(
            x.contiguous(), v_c.contiguous(), _contiguous(v_u), _contiguous(d_prev), float(guidance), float(t),
            float(t_ratio), float(alpha_phi), float(half_alpha_phi), float(inv_r),
        )
    return reference.dpm_step(x, v_c, v_u, d_prev, guidance, t, t_ratio, alpha_phi, half_alpha_phi, inv_r)

def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dimension has unit stride (strided row views are fine), else a copy."""
    return t if t.size(-1) <= 1 or t.stride(-1) == 1 else t.contiguous()


def _norm_kernel_applies(x, weight, mod_dtype, out_dtype) -> bool:
    return (
        x.dtype in _KERNEL_DTYPES
        and weight.dim() == 1
        and weight.dtype == torch.float32
        and mod_dtype in _KERNEL_DTYPES
        and out_dtype in (None, torch.float32, torch.bfloat16)
    )


def rms_norm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused RMSNorm + adaLN modulation (MMDiT form): ``RMSNorm(x)·(1 + scale) + shift``.

    x: [B, L, D] float32 or bfloat16; weight: [D] float32; shift, scale: [B, 1, D] (or [B, L, D]) in one
    dtype, float32 or bfloat16; strided views (chunks of the adaLN output) are read in place. Every step
    is rounded as :func:`pid.ops.reference.rms_norm_modulate` rounds it; the result is float32 (the
    reference's promoted dtype) or out_dtype (float32 or bfloat16, e.g. what autocast would cast it to).
    """
    if (
        x.dim() == 3
        and shift.dim() == 3
        and scale.dim() == 3
        and shift.dtype == scale.dtype
        and _norm_kernel_applies(x, weight, scale.dtype, out_dtype)
        and _use_kernel(x, weight, shift, scale)
    ):
        return torch.ops.pid.rms_norm_modulate(
            _unit_last(x), weight.contiguous(), _unit_last(shift), _unit_last(scale), eps, out_dtype
        )
    return reference.rms_norm_modulate(x, weight, shift, scale, eps, out_dtype)


def rms_norm_modulate_pixels(
    x: torch.Tensor,
    weight: torch.Tensor,
    mods: torch.Tensor,
    shift_chunk: int,
    scale_chunk: int,
    eps: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused RMSNorm + per-pixel adaLN modulation (PiT form), flattened for ``compress_to_attn``.

    x: [N, P, c] pixel tokens; weight: [c] float32; mods: [N, P, K*c] per-pixel modulation (K = 6 in PiD),
    chunk k in channels [k*c, (k+1)*c); shift and scale are read from chunks shift_chunk and scale_chunk
    without copies. Returns [N, P*c], float32 or out_dtype.
    """
    if (
        x.dim() == 3
        and mods.dim() == 3
        and _norm_kernel_applies(x, weight, mods.dtype, out_dtype)
        and _use_kernel(x, weight, mods)
    ):
        return torch.ops.pid.rms_norm_modulate_pixels(
            _unit_last(x), weight.contiguous(), _unit_last(mods), shift_chunk, scale_chunk, eps, out_dtype
        )
    return reference.rms_norm_modulate_pixels(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gated residual ``x + gate * y`` in x's dtype (``gate * y`` rounded in the dtype of gate and y).

    x, y: [B, L, D]; gate: [B, 1, D] (MMDiT, broadcast over L) or [B, L, D], e.g. the strided view
    ``mods[..., k*c:(k+1)*c]`` of a per-pixel modulation chunk (PiT), read in place. float32 or bfloat16.
    """
    if (
        x.dim() == 3
        and gate.dim() == 3
        and y.dim() == 3
        and x.dtype in _KERNEL_DTYPES
        and gate.dtype in _KERNEL_DTYPES
        and y.dtype in _KERNEL_DTYPES
        and _use_kernel(x, gate, y)
    ):
        return torch.ops.pid.gated_residual(_unit_last(x), _unit_last(gate), _unit_last(y))
    return reference.gated_residual(x, gate, y)


if _extension.available():

    @torch.library.register_fake("pid::sigma_gate")
    def _sigma_gate_fake(x, lq, lq_logit, w_x, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    @torch.library.register_fake("pid::sigma_gate_apply")
    def _sigma_gate_apply_fake(x, lq, logit, alpha_sigma):
        torch._check(x.dim() == 3, lambda: f"pid::sigma_gate_apply: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)

    def _check_float32_x(op, x):
        torch._check(x.dtype == torch.float32, lambda: f"pid::{op}: x must be float32, got {x.dtype}")

    @torch.library.register_fake("pid::student_step")
    def _student_step_fake(x, v, eps, t, t_next, x0_out=None):
        _check_float32_x("student_step", x)
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("pid::dpm_step")
    def _dpm_step_fake(x, v_c, v_u, d_prev, guidance, t, t_ratio, alpha_phi, half_alpha_phi, inv_r):
        _check_float32_x("dpm_step", x)
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, memory_format=torch.contiguous_format),
        )

    @torch.library.register_fake("pid::dpm_data_prediction")
    def _dpm_data_prediction_fake(x, v_c, v_u, guidance, t):
        _check_float32_x("dpm_data_prediction", x)
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    # Fake kernels of the attention family (they must live in pid.ops, the schemas' python module).
    @torch.library.register_fake("pid::qk_norm_rope")
    def _qk_norm_rope_fake(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset):
        torch._check(qkv.dim() == 5, lambda: f"pid::qk_norm_rope: qkv must be [B, N, 3, H, d], got {list(qkv.shape)}")
        return None

    @torch.library.register_fake("pid::attention")
    def _attention_fake(q, k, v, window, grid_h, grid_w, n_text):
        torch._check(q.dim() == 4, lambda: f"pid::attention: q must be [B, H, Sq, d], got {list(q.shape)}")
        B, H, Sq, d = q.shape
        return q.new_empty((B, Sq, H, d)).permute(0, 2, 1, 3)  # the kernel's [B, Sq, H, d] layout

    @torch.library.register_fake("pid::rms_norm_modulate")
    def _rms_norm_modulate_fake(x, weight, shift, scale, eps, out_dtype=None):
        torch._check(x.dim() == 3, lambda: f"pid::rms_norm_modulate: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape, dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::rms_norm_modulate_pixels")
    def _rms_norm_modulate_pixels_fake(x, weight, mods, shift_chunk, scale_chunk, eps, out_dtype=None):
        torch._check(
            x.dim() == 3, lambda: f"pid::rms_norm_modulate_pixels: x must have shape [N, P, c], got {list(x.shape)}"
        )
        return x.new_empty((x.shape[0], x.shape[1] * x.shape[2]), dtype=out_dtype or torch.float32)

    @torch.library.register_fake("pid::gated_residual")
    def _gated_residual_fake(x, gate, y):
        torch._check(x.dim() == 3, lambda: f"pid::gated_residual: x must have shape [B, L, D], got {list(x.shape)}")
        return x.new_empty(x.shape)


# The attention family (after _use_kernel and _KERNEL_DTYPES, which it uses).
from pid.ops._attention import (  # noqa: E402
    attention,
    attention_dtype,
    global_attention_backend,
    qk_norm_rope,
    set_global_attention_backend,
)
