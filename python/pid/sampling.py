"""Samplers on the flow schedule x_t = (1 − t)·x0 + t·ε (t = 1 noise, t = 0 clean), independent of the network.

Both take `velocity_fn(x, t, step)`: x [B, 3, H, W] float32, t [B] float32 flow time in [0, 1] (the caller turns
it into the network's ×1000 units), and `step`, the index of the step (0, 1, ...: `SamplerSettings.times()[step]`
is its time), so a caller can look up work it did per time ahead without reading t back from the device. It
returns the velocity v ≈ ε − x0. The samplers return the final state before clamping. Each calls `velocity_fn`
once per step (and once more with guidance), builds t on the device with a fill (no host-to-device copy, nothing
that waits for the device), so a whole sampling loop can be captured in a CUDA graph. Classifier-free guidance is
either the caller's guided velocity function, `v = v_u + s·(v_c − v_u)`, or formed inside the fused step
(`uncond_velocity_fn`, unconditional pass first).

`SamplerSettings` is one decode's sampler (`settings_for` applies a variant's defaults); `sample` runs it.
The reference guides the noise estimate ε̂ = (1 − t)·v + x instead;
ε̂_u + s·(ε̂_c − ε̂_u) = (1 − t)·(v_u + s·(v_c − v_u)) + x, so the two are equal up to float rounding."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from pid import ops
from pid.errors import PidError

log = logging.getLogger(__name__)

VelocityFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (x, t, step index) → velocity
StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, number of steps, state after it)

STUDENT_T_LIST = (0.999, 0.866, 0.634, 0.342, 0.0)
STUDENT_STEPS = 4
STUDENT_ONE_STEP_TIME = 1.0


def student_schedule(steps: int = STUDENT_STEPS, t_list: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The student's time grid (float32, ending at 0), by the reference rule: the configured list for the
    configured 4 steps; for other counts the entries at round(linspace(0, len − 1, steps + 1)) (round half to
    even, so steps > 4 repeat times); one step is the special single call at t = 1.0."""
    if steps < 1:
        raise PidError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return torch.tensor([STUDENT_ONE_STEP_TIME, 0.0])
    full = torch.tensor(STUDENT_T_LIST if t_list is None else list(t_list), dtype=torch.float32)
    if t_list is not None and steps == len(full) - 1 or t_list is None and steps == STUDENT_STEPS:
        grid = full
    else:
        grid = full[torch.linspace(0, len(full) - 1, steps + 1).round().long()]
    if abs(grid[-1].item()) > 1e-6:
        raise PidError(f"a student time list must end at 0, got {grid.tolist()}")
    return grid


def _fill(value: float, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), value, dtype=torch.float32, device=device)


def sample_student(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int = STUDENT_STEPS,
                   t_list: Optional[Sequence[float]] = None, mode: str = "sde",
                   generator: Optional[torch.Generator] = None, step_noises: Optional[Sequence[torch.Tensor]] = None,
                   callback: Optional[StepCallback] = None, use_kernel: bool = True) -> torch.Tensor:
    """The distilled few-step sampler. SDE mode (the release default) re-noises the x0 estimate to the next
    time with fresh noise: drawn from `generator` (continuing the stream the initial noise came from, as the
    reference does) or taken from `step_noises` (one [B, 3, H, W] tensor per intermediate step).

    Each SDE step and the final step are one fused pass, `pid.ops.student_step`: x0 = x − t·v in float64 cast
    to float32, then x_next = (1 − t_next)·x0 + t_next·ε in float32 (or x_next = x0 at t_next = 0); its PyTorch
    reference with `use_kernel=False`."""
    if mode not in ("sde", "ode"):
        raise PidError(f"mode must be 'sde' or 'ode', got {mode!r}")
    host_grid = student_schedule(steps, t_list)  # float32 on the CPU: the step scalars come from here
    times = host_grid.tolist()  # the float32 entries as Python floats (exact)
    n = len(times) - 1
    n_draws = sum(1 for t in times[1:] if t > 0) if mode == "sde" else 0
    if step_noises is not None and len(step_noises) != n_draws:
        raise PidError(f"step_noises must hold {n_draws} tensors for {steps} {mode} steps, got {len(step_noises)}")
    B = noise.shape[0]
    x = noise
    draw = 0
    for k in range(n):
        t_cur, t_next = times[k], times[k + 1]
        v = velocity_fn(x, _fill(t_cur, B, x.device), k)
        if t_next <= 0:
            x = ops.student_step(x, v, None, t_cur, t_next, use_kernel=use_kernel)
        elif mode == "ode":
            x = x + (host_grid[k + 1] - host_grid[k]).item() * v  # the float32 difference, exactly
        else:
            if step_noises is not None:
                eps = step_noises[draw].to(device=x.device, dtype=x.dtype)
                if eps.shape != x.shape:
                    raise PidError(f"step_noises[{draw}] has shape {tuple(eps.shape)}, expected {tuple(x.shape)}")
            else:
                eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            draw += 1
            x = ops.student_step(x, v, eps, t_cur, t_next, use_kernel=use_kernel)
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
        raise PidError(f"steps must be >= 1, got {steps}")
    u = 1.0 - torch.linspace(t_start, t_end, steps + 1)
    return (shift * u / (1 + (shift - 1) * u)).flip(0)


def _lambda(t: torch.Tensor) -> torch.Tensor:
    return torch.log(1 - t) - torch.log(t)  # +inf at t = 0


def sample_dpmpp_2m(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int, shift: float,
                    callback: Optional[StepCallback] = None, uncond_velocity_fn: Optional[VelocityFn] = None,
                    cfg_scale: float = 1.0, use_kernel: bool = True) -> torch.Tensor:
    """Multistep DPM-Solver++ of order 2 (order 1 for a single step) on the flow schedule, data prediction,
    first-order first and final steps (lower_order_final). The final step lands on t = 0, where the update is
    exactly the last x0 estimate; it is computed in closed form, so no NaN appears.

    Classifier-free guidance: either `velocity_fn` is already the guided velocity, or pass the unconditional
    one as `uncond_velocity_fn` with `cfg_scale` s (called first, as the reference does); then
    v = v_u + s·(v_c − v_u) is formed inside the fused step (equal to forming it in PyTorch).

    Each step is one fused pass, `pid.ops.dpm_step`: the data prediction D = (x − t·ε̂)/(1 − t) with
    ε̂ = (1 − t)·v + x at the current point, then the multistep update to the next time. The schedule scalars
    (t_next/t, αφ, 1/r) are computed here in float32 on the host. `use_kernel=False`: its PyTorch reference."""
    host_grid = flow_timesteps(steps, shift)  # float32 on the CPU: the step scalars come from here
    B = noise.shape[0]
    guided = uncond_velocity_fn is not None and cfg_scale != 1.0

    def velocities(x: torch.Tensor, i: int):
        t = _fill(host_grid[i].item(), B, x.device)
        if not guided:
            return velocity_fn(x, t, i), None
        v_u = uncond_velocity_fn(x, t, i)  # unconditional pass first
        return velocity_fn(x, t, i), v_u

    x = noise
    d_prev = None
    for i in range(1, steps + 1):
        t_prev, t = host_grid[i - 1], host_grid[i]
        first_order = i == 1 or i == steps
        v_c, v_u = velocities(x, i - 1)
        if t.item() == 0:  # σ_t = 0, α_t = 1, expm1(−∞) = −1: x_t = x̂0 exactly
            x = ops.dpm_data_prediction(x, v_c, v_u, guidance=cfg_scale, t=t_prev.item(), use_kernel=use_kernel)
        else:
            h = _lambda(t) - _lambda(t_prev)
            alpha_phi = torch.exp(torch.log(1 - t)) * torch.expm1(-h)
            second = {}
            if not first_order:
                r = (_lambda(t_prev) - _lambda(host_grid[i - 2])) / h
                second = dict(half_alpha_phi=(0.5 * alpha_phi).item(), inv_r=(1.0 / r).item())
            x, d_prev = ops.dpm_step(x, v_c, v_u, None if first_order else d_prev, guidance=cfg_scale,
                                     t=t_prev.item(), t_ratio=(t / t_prev).item(), alpha_phi=alpha_phi.item(),
                                     use_kernel=use_kernel, **second)
        if callback is not None:
            callback(i - 1, steps, x)
    return x


# ----------------------------------------------------------------------------------- one decode's sampler
@dataclass(frozen=True)
class SamplerSettings:
    """The sampler of one decode: the 4-step student, or DPM-Solver++(2M) with guidance and shift."""

    name: str  # "student" or "dpm++2m"
    steps: int
    cfg_scale: float = 1.0  # dpm++2m only
    shift: float = 0.0  # dpm++2m only

    @property
    def guided(self) -> bool:
        return self.name != "student" and self.cfg_scale != 1.0

    def times(self) -> list[float]:
        """The flow time of each step (float32 values), where the sampler calls the velocity (every guidance pass
        of a step at its time): `velocity_fn`'s `step` indexes this list."""
        if self.name == "student":
            return student_schedule(self.steps)[:-1].tolist()
        return flow_timesteps(self.steps, self.shift)[:-1].tolist()

    def noise_draws(self) -> int:
        """How many [B, 3, H, W] noises the sampler draws after the initial one (the student's re-noising; SDE)."""
        if self.name != "student":
            return 0
        return sum(1 for t in student_schedule(self.steps).tolist()[1:] if t > 0)


def settings_for(defaults, sampler: Optional[str], steps: Optional[int], cfg_scale: Optional[float],
                 shift: Optional[float], height: int, width: int, *, teacher: bool = False) -> SamplerSettings:
    """One decode's sampler from `decode`'s arguments and the variant's defaults (`pid.variants.SamplerDefaults`, or
    None for a network outside the registry: the student). A teacher's defaults also give guidance and the shift
    (dynamic: from the output size)."""
    name = sampler or (defaults.sampler if defaults else "student")
    if name not in ("student", "dpm++2m"):
        raise PidError(f"sampler must be 'student' or 'dpm++2m', got {name!r}")
    if steps is None:
        steps = defaults.steps if defaults and defaults.sampler == name else (4 if name == "student" else 25)
    if steps < 1:
        raise PidError(f"steps must be >= 1, got {steps}")
    if name == "student":
        if cfg_scale is not None or shift is not None:
            log.warning("cfg_scale and shift are ignored by the distilled 4-step student sampler")
        return SamplerSettings(name, int(steps))
    teacher_defaults = defaults if teacher else None
    if cfg_scale is None:
        cfg_scale = teacher_defaults.cfg_scale if teacher_defaults else 1.0
    if shift is None:
        if teacher_defaults and teacher_defaults.dynamic_shift:
            shift = dynamic_shift(height, width, *teacher_defaults.dynamic_shift)
        else:
            shift = teacher_defaults.shift if teacher_defaults else 6.0
    if not math.isfinite(cfg_scale):
        raise PidError(f"cfg_scale must be a finite number (1: no guidance; the teachers' default 5), got {cfg_scale}")
    if not (math.isfinite(shift) and shift > 0):
        raise PidError(f"shift must be a positive number (the flow schedule's; the teachers' default 6 at 2048²), "
                       f"got {shift}")
    return SamplerSettings(name, int(steps), float(cfg_scale), float(shift))


def sample(settings: SamplerSettings, velocity_fn: VelocityFn, noise: torch.Tensor, *,
           uncond_velocity_fn: Optional[VelocityFn] = None, generator: Optional[torch.Generator] = None,
           step_noises: Optional[Sequence[torch.Tensor]] = None, callback: Optional[StepCallback] = None,
           use_kernel: bool = True) -> torch.Tensor:
    """Runs one decode's sampler from the initial noise: `sample_student` (re-noising from `generator` or
    `step_noises`) or `sample_dpmpp_2m` (guidance with `uncond_velocity_fn` and `settings.cfg_scale`)."""
    if settings.name == "student":
        return sample_student(velocity_fn, noise, steps=settings.steps, generator=generator, step_noises=step_noises,
                              callback=callback, use_kernel=use_kernel)
    return sample_dpmpp_2m(velocity_fn, noise, steps=settings.steps, shift=settings.shift, callback=callback,
                           uncond_velocity_fn=uncond_velocity_fn, cfg_scale=settings.cfg_scale, use_kernel=use_kernel)
