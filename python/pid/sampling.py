"""Samplers on the flow schedule x_t = (1 − t)·x0 + t·ε (t = 1 noise, t = 0 clean), independent of the network.

Both take `velocity_fn(x, t)`: x [B, 3, H, W] float32, t [B] float32 flow time in [0, 1] (the caller turns
it into the network's ×1000 units), returning the velocity v ≈ ε − x0. They return the final state before
clamping. Classifier-free guidance is built by the caller as a guided velocity function,
`v = v_u + s·(v_c − v_u)` (unconditional pass first). The reference guides the noise estimate
ε̂ = (1 − t)·v + x instead; ε̂_u + s·(ε̂_c − ε̂_u) = (1 − t)·(v_u + s·(v_c − v_u)) + x, so the two are equal
up to float rounding."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, number of steps, state after it)

STUDENT_T_LIST = (0.999, 0.866, 0.634, 0.342, 0.0)
STUDENT_STEPS = 4
STUDENT_ONE_STEP_TIME = 1.0


def student_schedule(steps: int = STUDENT_STEPS, t_list: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The student's time grid (float32, ending at 0), by the reference rule: the configured list for the
    configured 4 steps; for other counts the entries at round(linspace(0, len − 1, steps + 1)) (round half to
    even, so steps > 4 repeat times); one step is the special single call at t = 1.0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return torch.tensor([STUDENT_ONE_STEP_TIME, 0.0])
    full = torch.tensor(STUDENT_T_LIST if t_list is None else list(t_list), dtype=torch.float32)
    if t_list is not None and steps == len(full) - 1 or t_list is None and steps == STUDENT_STEPS:
        grid = full
    else:
        grid = full[torch.linspace(0, len(full) - 1, steps + 1).round().long()]
    if abs(grid[-1].item()) > 1e-6:
        raise ValueError(f"a student time list must end at 0, got {grid.tolist()}")
    return grid


def _to_x0(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0 = x − t·v in float64, cast back to x's dtype (the reference's arithmetic)."""
    return (x.double() - t.double() * v.double()).to(x.dtype)


def sample_student(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int = STUDENT_STEPS,
                   t_list: Optional[Sequence[float]] = None, mode: str = "sde",
                   generator: Optional[torch.Generator] = None, step_noises: Optional[Sequence[torch.Tensor]] = None,
                   callback: Optional[StepCallback] = None) -> torch.Tensor:
    """The distilled few-step sampler. SDE mode (the release default) re-noises the x0 estimate to the next
    time with fresh noise: drawn from `generator` (continuing the stream the initial noise came from, as the
    reference does) or taken from `step_noises` (one [B, 3, H, W] tensor per intermediate step)."""
    if mode not in ("sde", "ode"):
        raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
    grid = student_schedule(steps, t_list).to(noise.device)
    n = len(grid) - 1
    n_draws = sum(1 for t in grid[1:] if t.item() > 0) if mode == "sde" else 0
    if step_noises is not None and len(step_noises) != n_draws:
        raise ValueError(f"step_noises must hold {n_draws} tensors for {steps} {mode} steps, got {len(step_noises)}")
    B = noise.shape[0]
    x = noise
    draw = 0
    for k in range(n):
        t_cur, t_next = grid[k], grid[k + 1]
        t_batch = t_cur.expand(B)
        v = velocity_fn(x, t_batch)
        if t_next.item() <= 0:
            x = _to_x0(x, v, t_batch.view(B, 1, 1, 1))
        elif mode == "ode":
            x = x + (t_next - t_cur) * v
        else:
            x0 = _to_x0(x, v, t_batch.view(B, 1, 1, 1))
            if step_noises is not None:
                eps = step_noises[draw].to(device=x0.device, dtype=x0.dtype)
                if eps.shape != x0.shape:
                    raise ValueError(f"step_noises[{draw}] has shape {tuple(eps.shape)}, expected {tuple(x0.shape)}")
            else:
                eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
            draw += 1
            x = (1.0 - t_next) * x0 + t_next * eps
        if callback is not None:
            callback(k, n, x)
    return x


# ----------------------------------------------------------------------------------- DPM-Solver++(2M)
def dynamic_shift(height: int, width: int, base_shift: float = 6.0, base_size: int = 2048) -> float:
    """Resolution-dependent flow shift of the teachers: base · sqrt(sqrt(H·W) / base_size)."""
    return base_shift * math.sqrt(math.sqrt(height * width) / base_size)


def flow_timesteps(steps: int, shift: float, t_start: float = 1.0, t_end: float = 0.001) -> torch.Tensor:
    """The "time_uniform_flow" grid: u = 1 − linspace(t_start, t_end, N + 1), t = s·u / (1 + (s − 1)·u),
    flipped so it runs from ≈1 down to exactly 0 (float32)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = 1.0 - torch.linspace(t_start, t_end, steps + 1)
    return (shift * u / (1 + (shift - 1) * u)).flip(0)


def _lambda(t: torch.Tensor) -> torch.Tensor:
    return torch.log(1 - t) - torch.log(t)  # +inf at t = 0


def sample_dpmpp_2m(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int, shift: float,
                    callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Multistep DPM-Solver++ of order 2 (order 1 for a single step) on the flow schedule, data prediction,
    first-order first and final steps (lower_order_final). The final step lands on t = 0, where the update is
    exactly the last x0 estimate; it is computed in closed form, so no NaN appears."""
    grid = flow_timesteps(steps, shift).to(noise.device)
    B = noise.shape[0]

    def data_prediction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = velocity_fn(x, t.expand(B))
        eps = (1 - t) * v + x  # the reference's operation order: ε̂ first, then x̂0
        return (x - t * eps) / (1 - t)

    x = noise
    d_prev, d_cur = None, data_prediction(x, grid[0])
    for i in range(1, steps + 1):
        t_prev, t = grid[i - 1], grid[i]
        first_order = i == 1 or i == steps
        if t.item() == 0:
            x = d_cur  # σ_t = 0, α_t = 1, expm1(−∞) = −1: x_t = x̂0 exactly
        else:
            h = _lambda(t) - _lambda(t_prev)
            alpha_phi = torch.exp(torch.log(1 - t)) * torch.expm1(-h)
            x = (t / t_prev) * x - alpha_phi * d_cur
            if not first_order:
                r = (_lambda(t_prev) - _lambda(grid[i - 2])) / h
                x = x - 0.5 * alpha_phi * ((1.0 / r) * (d_cur - d_prev))
        if callback is not None:
            callback(i - 1, steps, x)
        if i < steps:
            d_prev, d_cur = d_cur, data_prediction(x, t)
    return x
