"""Input builders of the pid op families, shared by the op table (tests/ops_table.py: the contract every op meets)
and the numerics of each family (tests/test_ops_<family>.py: kernels against float64 and the reference)."""

from __future__ import annotations

import math

import torch

from pid.nn.rope import rope_1d, rope_2d

F32, BF16 = torch.float32, torch.bfloat16


# ---- attention family: pid::attention, pid::qk_norm_rope ---------------------------------------------------------
def make_qkv(B, H, Sq, Sk, d, dtype, seed=0, sharp=1.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    # q.k / sqrt(d) ~ N(0, sharp^2): sharp 2-3 gives peaked softmax rows, 0.5 nearly uniform ones.
    q = torch.randn(B, H, Sq, d, generator=g) * math.sqrt(sharp)
    k = torch.randn(B, H, Sk, d, generator=g) * math.sqrt(sharp)
    v = torch.randn(B, H, Sk, d, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def windowed_inputs(B, H, gh, gw, n_text, image_only, d, dtype, seed, device="cpu"):
    Sk = n_text + gh * gw
    q, k, v = make_qkv(B, H, Sk, Sk, d, dtype, seed, sharp=2.0, device=device)
    if image_only:
        q = q[:, :, n_text:]
    return q, k, v


def make_norm_rope_inputs(B, N, H, d, in_dtype, w_dtype, rope_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    # A strided view, as the qkv projection's output viewed per head (+ an extra column to break density).
    qkv = (torch.randn(B, N, 3 * H * d + 1, generator=g) * 3)[..., 1:].reshape(B, N, 3, H, d).to(in_dtype)
    qw = (1 + 0.3 * torch.randn(d, generator=g)).to(w_dtype)
    kw = (1 + 0.3 * torch.randn(d, generator=g)).to(w_dtype)
    if rope_kind == "none":
        rope = None
    elif rope_kind == "text":
        rope = rope_1d(d, N)
    else:
        rope = rope_2d(d, 1, N) if d % 4 == 0 else rope_1d(d, N, theta=100.0)
    return qkv, qw, kw, rope


# ---- norm/modulate family: pid::rms_norm_modulate, pid::rms_norm_modulate_pixels, pid::gated_residual ------------
MOD_LAYOUTS = ("chunk", "contiguous", "per_token", "shared")


def make_norm_inputs(B, L, D, x_dtype, mod_dtype, layout="chunk", seed=0, integer_x=False, device="cpu"):
    """x [B, L, D]; weight [D] float32; shift, scale as the blocks see them:
    chunk      views of an adaLN output [B, 1, 6D] (row stride 6D), broadcast over L (MMDiT);
    contiguous [B, 1, D] tensors; per_token: views of a [B, L, 6D] output (PiT-like); shared: [1, 1, D]."""
    g = torch.Generator().manual_seed(seed)
    if integer_x:  # every float32 sum of squares is exact, in any order
        x = torch.randint(-16, 17, (B, L, D), generator=g).float()
    else:
        x = torch.randn(B, L, D, generator=g) * 3
    weight = 1 + 0.2 * torch.randn(D, generator=g)
    if layout in ("chunk", "per_token"):
        m = torch.randn(B, L if layout == "per_token" else 1, 6 * D, generator=g).to(device=device, dtype=mod_dtype)
        shift, scale = m[..., 3 * D : 4 * D], m[..., 4 * D : 5 * D]
    else:
        rows = 1 if layout == "shared" else B
        shift, scale = (torch.randn(rows, 1, D, generator=g).to(device=device, dtype=mod_dtype) for _ in range(2))
    return x.to(device=device, dtype=x_dtype), weight.to(device), shift, scale


def make_pixel_inputs(N, P, c, K, x_dtype, mod_dtype, padded=False, seed=0, integer_x=False, device="cpu"):
    """x [N, P, c]; weight [c]; mods [N, P, K*c] (padded: a view of a wider tensor, row stride (K+1)*c)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-16, 17, (N, P, c), generator=g).float() if integer_x else torch.randn(N, P, c, generator=g) * 3
    weight = 1 + 0.2 * torch.randn(c, generator=g)
    mods = torch.randn(N, P, (K + padded) * c, generator=g).to(device=device, dtype=mod_dtype)[..., : K * c]
    return x.to(device=device, dtype=x_dtype), weight.to(device), mods


def make_gated_inputs(B, L, D, x_dtype, g_dtype, y_dtype, layout="chunk", seed=0, device="cpu"):
    """x, y [B, L, D]; gate: chunk of [B, 1, 6D] (MMDiT), per_token chunk of [B, L, 6D] (PiT),
    contiguous [B, 1, D], or shared [1, 1, D]."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, L, D, generator=g) * 4).to(device=device, dtype=x_dtype)
    y = torch.randn(B, L, D, generator=g).to(device=device, dtype=y_dtype)
    if layout in ("chunk", "per_token"):
        m = torch.randn(B, L if layout == "per_token" else 1, 6 * D, generator=g).to(device=device, dtype=g_dtype)
        gate = m[..., 2 * D : 3 * D]
    else:
        gate = torch.randn(1 if layout == "shared" else B, 1, D, generator=g).to(device=device, dtype=g_dtype)
    return x, gate, y


# ---- sampler-step family: pid::student_step, pid::dpm_step, pid::dpm_data_prediction ------------------------------
def make_sampler_tensors(shape, v_dtype, seed, device="cpu", n_float=3, n_v=2):
    """`n_float` float32 tensors (x, eps, d_prev, ...) and `n_v` velocities in v_dtype, all of `shape`."""
    g = torch.Generator().manual_seed(seed)
    fl = [torch.randn(shape, generator=g).to(device) for _ in range(n_float)]
    vs = [(torch.randn(shape, generator=g) * 2).to(device=device, dtype=v_dtype) for _ in range(n_v)]
    return fl, vs


# ---- sigma-gate family: pid::sigma_gate, pid::sigma_gate_apply ---------------------------------------------------
MIXED = "mixed"  # x float32, lq / lq_logit / w_x bfloat16: the fast path's gates


def make_sigma_gate_inputs(B, L, D, per_dim, dtype, seed=0, device="cpu"):
    """x, lq [B, L, D], lq_logit [B, L, G], w_x [G, D], alpha_sigma [B] (G = D if per_dim else 1); dtype: of every
    input but alpha_sigma (float32), or MIXED."""
    g = torch.Generator().manual_seed(seed)
    G = D if per_dim else 1
    x = torch.randn(B, L, D, generator=g)
    lq = torch.randn(B, L, D, generator=g)
    lq_logit = torch.randn(B, L, G, generator=g)
    w_x = torch.randn(G, D, generator=g) / D**0.5  # logits O(1): the gate is neither 0 nor 1
    alpha_sigma = torch.rand(B, generator=g) * 3
    x_dtype, p_dtype = (F32, BF16) if dtype == MIXED else (dtype, dtype)
    cast = [x.to(device=device, dtype=x_dtype)] + [t.to(device=device, dtype=p_dtype) for t in (lq, lq_logit, w_x)]
    return (*cast, alpha_sigma.to(device))


def make_sigma_gate_apply_inputs(B, L, D, per_dim, dtype, logit_f32, seed=0, device="cpu"):
    """x, lq, logit, alpha_sigma; dtype: of x and lq, or MIXED (x float32, lq bfloat16); the logit is float32 or
    lq's dtype."""
    g = torch.Generator().manual_seed(seed)
    G = D if per_dim else 1
    x_dtype, q_dtype = (F32, BF16) if dtype == MIXED else (dtype, dtype)
    x = torch.randn(B, L, D, generator=g).to(device=device, dtype=x_dtype)
    lq = torch.randn(B, L, D, generator=g).to(device=device, dtype=q_dtype)
    logit = (torch.randn(B, L, G, generator=g) * 2).to(device=device, dtype=F32 if logit_f32 else q_dtype)
    return x, lq, logit, (torch.rand(B, generator=g) * 3).to(device)
