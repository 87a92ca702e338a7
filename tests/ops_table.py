"""The table of pid's compiled ops, in the spirit of PyTorch's OpInfo: for every ``torch.ops.pid.<op>`` an entry with
its sample inputs, its PyTorch reference (``pid.ops.reference``), its face (``pid.ops``), the dtypes its kernels take
and how its kernel's results compare with the reference's. tests/test_ops_contract.py applies every property of the
contract to every entry alike; the numerics of each family (float64 bounds on random and odd shapes) are in
tests/test_ops_<family>.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import pid.ops
from pid.ops import reference
from op_inputs import (BF16, F32, MIXED, make_gated_inputs, make_norm_inputs, make_norm_rope_inputs,
                       make_pixel_inputs, make_qkv, make_sampler_tensors, make_sigma_gate_apply_inputs,
                       make_sigma_gate_inputs)

EPS = 1e-6

# How an op's kernel results compare with its reference's on the same inputs.
BITS = "bits"  # bit for bit: the kernel rounds every step as the reference does
BOUND = "float64 bound"  # each within an error bound of a float64 evaluation (tests/test_ops_<family>.py)


@dataclass(frozen=True)
class Sample:
    args: tuple  # torch.ops.pid.<op>'s positional arguments
    kwargs: dict = field(default_factory=dict)
    compile: bool = False  # also traced by torch.compile in the contract (a few per op: compiling is slow)


@dataclass(frozen=True)
class OpEntry:
    name: str  # torch.ops.pid.<name>; its face is pid.ops.<name>
    family: str  # tests/test_ops_<family>.py holds its numerics
    samples: Callable[[str], list]  # device -> [Sample]; on the CPU they cover `dtypes`
    face: Callable[..., tuple]  # (*op args, **op kwargs) -> outputs, computed by pid.ops.<name>
    reference: Callable[..., tuple]  # (*op args, **op kwargs) -> outputs, computed by pid.ops.reference
    tolerance: str  # BITS or BOUND
    foreign: tuple  # indices of tensor arguments the one-device check moves to another device, one at a time
    dtypes: tuple = (F32, BF16)  # of the floating tensors its kernels take
    mutated: tuple = ()  # indices of arguments the op writes into (output buffers)
    outputs: Optional[Callable[[tuple, object], tuple]] = None  # (op args, op result) -> outputs; None: the result

    def __repr__(self) -> str:
        return self.name


def fresh_args(entry: OpEntry, args: tuple) -> tuple:
    """args with new copies of the buffers the op writes into, so that two runs never share them."""
    return tuple(a.clone() if i in entry.mutated and a is not None else a for i, a in enumerate(args))


def run_op(entry: OpEntry, args: tuple, kwargs: dict) -> tuple:
    args = fresh_args(entry, args)
    result = getattr(torch.ops.pid, entry.name)(*args, **kwargs)
    if entry.outputs is not None:
        return entry.outputs(args, result)
    return result if isinstance(result, tuple) else (result,)


def run_face(entry: OpEntry, args: tuple, kwargs: dict, face: Optional[Callable] = None) -> tuple:
    """The face's outputs (`face`: entry.face, or a compiled version of it)."""
    return (face or entry.face)(*fresh_args(entry, args), **kwargs)


def run_reference(entry: OpEntry, args: tuple, kwargs: dict) -> tuple:
    return entry.reference(*args, **kwargs)


# ---- sigma gate ----------------------------------------------------------------------------------------------------
def _sigma_gate_samples(device):
    # Per token (G = 1: the face calls pid::sigma_gate; compiled) and per channel (G = D), every dtype combination.
    return [Sample(make_sigma_gate_inputs(2, 5, 12, per_dim, dt, device=device), compile=not per_dim and dt == F32)
            for per_dim in (False, True) for dt in (F32, BF16, MIXED)]


def _sigma_gate_apply_samples(device):
    combos = ((F32, True), (BF16, True), (BF16, False), (MIXED, True), (MIXED, False))  # (x/lq dtype, float32 logit)
    return [Sample(make_sigma_gate_apply_inputs(2, 5, 12, per_dim, dt, f32, device=device), compile=i == 0)
            for i, (per_dim, (dt, f32)) in enumerate((p, c) for p in (False, True) for c in combos)]


# ---- sampler steps -------------------------------------------------------------------------------------------------
DPM_COEFFS = (0.9, 0.95, -0.04, -0.02, 1.3)  # t, t_ratio, alpha_phi, half_alpha_phi, inv_r


def _student_step_samples(device):
    (x, eps, _), (v, _) = make_sampler_tensors((2, 3, 5, 7), F32, 9, device)
    _, (vb, _) = make_sampler_tensors((2, 3, 5, 7), BF16, 9, device)
    return [Sample((x, v, eps, 0.866, 0.634, None), compile=True),
            Sample((x, vb, None, 0.342, 0.0, None)),  # the last step: no noise
            Sample((x, v, eps, 0.866, 0.634, torch.empty_like(x)))]  # x0 written too


def _student_step_face(x, v, eps, t, t_next, x0_out=None):
    out = pid.ops.student_step(x, v, eps, t, t_next, return_x0=x0_out is not None)
    return out if x0_out is not None else (out,)


def _student_step_reference(x, v, eps, t, t_next, x0_out=None):
    x_next, x0 = reference.student_step(x, v, eps, t, t_next)
    return (x_next, x0) if x0_out is not None else (x_next,)


def _dpm_step_samples(device):
    (x, _, d_prev), (v, _) = make_sampler_tensors((2, 3, 5, 7), F32, 9, device)
    _, (vb, vub) = make_sampler_tensors((2, 3, 5, 7), BF16, 9, device)
    return [Sample((x, v, None, None, 1.0, *DPM_COEFFS)),  # first order, unguided
            Sample((x, vb, vub, d_prev, 2.5, *DPM_COEFFS), compile=True)]  # second order, guided


def _dpm_step_face(x, v_c, v_u, d_prev, guidance, t, t_ratio, alpha_phi, half_alpha_phi, inv_r):
    return pid.ops.dpm_step(x, v_c, v_u, d_prev, guidance=guidance, t=t, t_ratio=t_ratio, alpha_phi=alpha_phi,
                            half_alpha_phi=half_alpha_phi, inv_r=inv_r)


def _dpm_data_prediction_samples(device):
    (x, _, _), (v, v_u) = make_sampler_tensors((2, 3, 5, 7), F32, 9, device)
    _, (vb, _) = make_sampler_tensors((2, 3, 5, 7), BF16, 9, device)
    return [Sample((x, v, v_u, 2.5, 0.7), compile=True), Sample((x, vb, None, 1.0, 0.7))]


# ---- attention -----------------------------------------------------------------------------------------------------
def _qk_norm_rope_samples(device):
    samples = []
    for dt in (F32, BF16):
        qkv, qw, kw, rope = make_norm_rope_inputs(2, 6, 3, 8, dt, F32, "text")
        qkv, qw, kw, cos, sin = (t.to(device) for t in (qkv, qw, kw, *rope))
        q, k = torch.empty(2, 3, 9, 8, dtype=dt, device=device), torch.empty(2, 3, 6, 8, dtype=dt, device=device)
        samples += [Sample((qkv, qw, kw, cos, sin, EPS, q, 3, k, 0), compile=dt == F32),  # q into rows 3..8 of 9
                    Sample((qkv, qw, kw, None, None, EPS, None, 0, k, 0))]  # no rotation, k only
    return samples


def _qk_norm_rope_rows(args, result):
    """The rows the op wrote: [offset, offset + N) of each buffer given."""
    N = args[0].shape[1]
    return tuple(buf[:, :, off : off + N] for buf, off in ((args[6], args[7]), (args[8], args[9])) if buf is not None)


def _qk_norm_rope_face(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset):
    rope = None if cos is None else (cos, sin)
    pid.ops.qk_norm_rope(qkv, q_weight, k_weight, rope, eps, out=(q_out, k_out), offsets=(q_offset, k_offset))
    return _qk_norm_rope_rows((qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset), None)


def _qk_norm_rope_reference(qkv, q_weight, k_weight, cos, sin, eps, q_out, q_offset, k_out, k_offset):
    dtype = (q_out if q_out is not None else k_out).dtype
    q, k = reference.qk_norm_rope(qkv, q_weight, k_weight, None if cos is None else (cos, sin), eps, dtype)
    return tuple(t for t, buf in ((q, q_out), (k, k_out)) if buf is not None)


def _attention_samples(device):
    d = 8 if device == "cpu" else 64  # the CUDA kernel takes head_dim 64 or 72
    samples = []
    for window in (0, 2):  # 0: global attention; 2: windowed over 2 text tokens and a 2 x 4 grid
        for dt in (F32, BF16):
            compile = (window, dt) in ((0, F32), (2, BF16))
            samples.append(Sample((*make_qkv(2, 3, 10, 10, d, dt, device=device), window, 2, 4, 2), compile=compile))
    return samples


def _attention_face(q, k, v, window, grid_h, grid_w, n_text):
    if window == 0:
        return (pid.ops.attention(q, k, v, backend="kernel"),)
    return (pid.ops.attention(q, k, v, window, (grid_h, grid_w), n_text, backend="kernel"),)


def _attention_reference(q, k, v, window, grid_h, grid_w, n_text):
    if window == 0:
        return (reference.attention(q, k, v),)
    return (reference.attention(q, k, v, window, (grid_h, grid_w), n_text),)


# ---- norm / modulate -----------------------------------------------------------------------------------------------
def _rms_norm_modulate_samples(device):
    combos = [("chunk", F32, BF16, None), ("chunk", BF16, F32, BF16), ("per_token", F32, BF16, None),
              ("per_token", BF16, F32, BF16), ("chunk", F32, F32, BF16), ("chunk", BF16, BF16, BF16)]
    return [Sample((*make_norm_inputs(2, 5, 12, xd, md, layout, device=device), EPS), {"out_dtype": od},
                   compile=i == 0) for i, (layout, xd, md, od) in enumerate(combos)]


def _rms_norm_modulate_pixels_samples(device):
    combos = [(False, F32, BF16, None), (False, BF16, F32, BF16), (True, F32, BF16, None), (True, BF16, F32, BF16),
              (False, BF16, BF16, None)]  # (padded mods rows, x dtype, mods dtype, out_dtype)
    return [Sample((*make_pixel_inputs(3, 5, 4, 6, xd, md, padded, device=device), 3, 4, EPS), {"out_dtype": od},
                   compile=i == 0) for i, (padded, xd, md, od) in enumerate(combos)]


def _gated_residual_samples(device):
    combos = [("chunk", F32, BF16, BF16), ("chunk", BF16, F32, F32), ("per_token", F32, BF16, BF16),
              ("per_token", BF16, F32, F32), ("per_token", F32, F32, BF16)]  # (gate layout, x, gate, y dtypes)
    return [Sample(make_gated_inputs(2, 5, 12, xd, gd, yd, layout, device=device), compile=i == 2)
            for i, (layout, xd, gd, yd) in enumerate(combos)]


def _one(fn):
    """An outputs function from a function of one result."""
    return lambda *args, **kwargs: (fn(*args, **kwargs),)


TABLE = [
    OpEntry("sigma_gate", "sigma_gate", _sigma_gate_samples, _one(pid.ops.sigma_gate), _one(reference.sigma_gate),
            BOUND, foreign=(1, 4)),
    OpEntry("sigma_gate_apply", "sigma_gate", _sigma_gate_apply_samples, _one(pid.ops.sigma_gate_apply),
            _one(reference.sigma_gate_apply), BOUND, foreign=(3,)),
    OpEntry("student_step", "sampler_step", _student_step_samples, _student_step_face, _student_step_reference,
            BITS, foreign=(1, 2), mutated=(5,),
            outputs=lambda args, result: (result,) if args[5] is None else (result, args[5])),
    OpEntry("dpm_step", "sampler_step", _dpm_step_samples, _dpm_step_face, reference.dpm_step, BITS, foreign=(3,)),
    OpEntry("dpm_data_prediction", "sampler_step", _dpm_data_prediction_samples,
            lambda x, v_c, v_u, guidance, t: (pid.ops.dpm_data_prediction(x, v_c, v_u, guidance=guidance, t=t),),
            _one(reference.dpm_data_prediction), BITS, foreign=(1,)),
    OpEntry("qk_norm_rope", "attention", _qk_norm_rope_samples, _qk_norm_rope_face, _qk_norm_rope_reference, BOUND,
            foreign=(2,), mutated=(6, 8), outputs=_qk_norm_rope_rows),
    OpEntry("attention", "attention", _attention_samples, _attention_face, _attention_reference, BOUND,
            foreign=(2,)),
    OpEntry("rms_norm_modulate", "norm_modulate", _rms_norm_modulate_samples, _one(pid.ops.rms_norm_modulate),
            _one(reference.rms_norm_modulate), BOUND, foreign=(1, 2)),
    OpEntry("rms_norm_modulate_pixels", "norm_modulate", _rms_norm_modulate_pixels_samples,
            _one(pid.ops.rms_norm_modulate_pixels), _one(reference.rms_norm_modulate_pixels), BOUND, foreign=(2,)),
    OpEntry("gated_residual", "norm_modulate", _gated_residual_samples, _one(pid.ops.gated_residual),
            _one(reference.gated_residual), BITS, foreign=(1, 2)),
]
ENTRIES = {e.name: e for e in TABLE}
