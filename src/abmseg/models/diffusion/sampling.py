"""Reverse chains p_theta(x_{t-1} | x_t, c) that turn a noised pseudo-PET into the sPET.

Both samplers take an ``eps_fn(x_t, t) -> eps`` closure (the container binds the CT features and
the adaptive weights), so they are plain loops over the schedule's closed forms:

* :func:`ddpm_sample`: the paper's ancestral chain, one step per timestep, with
  sigma_t^2 = beta_tilde_t (posterior variance, default) or beta_t.
* :func:`ddim_sample`: DDIM (Song et al. 2021) on ``k`` timesteps of the same trained model; eta = 0
  is deterministic, eta = 1 with k = T reproduces the DDPM posterior exactly (tested).

The chain starts at :func:`noised_start`: the pseudo-PET jumped to ``start_step`` with q(x_t | x_0).
``start_step = T`` (the paper) noises it completely; smaller values are SDEdit-style partial starts.
All randomness comes from an optional ``torch.Generator`` so a seed fixes the output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from abmseg.models.diffusion.schedule import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, int, Tensor, Tensor], None]
DDPM_VARIANCES = ("posterior", "beta")


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator`` (on its own device)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def noised_start(
    schedule: NoiseSchedule,
    pseudo_pet: Tensor,
    start_step: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x at timestep ``start_step - 1``: the pseudo-PET after ``start_step`` forward steps."""
    if not 1 <= start_step <= schedule.T:
        raise ValueError(f"start_step must be in [1, {schedule.T}], got {start_step}")
    t = torch.full((pseudo_pet.shape[0],), start_step - 1, device=pseudo_pet.device)
    return schedule.q_sample(pseudo_pet, t, randn_like(pseudo_pet, generator))


def ddim_timesteps(start_step: int, steps: int) -> list[int]:
    """``steps`` decreasing timesteps from ``start_step - 1`` ("trailing" spacing, ends near 0)."""
    if not 1 <= steps <= start_step:
        raise ValueError(f"steps must be in [1, start_step={start_step}], got {steps}")
    return [round(start_step - j * start_step / steps) - 1 for j in range(steps)]


def _x0_and_eps(
    schedule: NoiseSchedule, x: Tensor, t: Tensor, eps: Tensor, clip_x0: bool
) -> tuple[Tensor, Tensor]:
    x0 = schedule.predict_x0(x, t, eps)
    if clip_x0:  # data live in [-1, 1]; re-derive eps so the DDIM update stays consistent
        x0 = x0.clamp(-1.0, 1.0)
        eps = schedule.predict_eps(x, t, x0)
    return x0, eps


def ddim_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    x0: Tensor,
    eps: Tensor,
    t: int,
    t_prev: int,
    eta: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDIM update x_t -> x_{t_prev} (``t_prev = -1`` means x_0)."""
    ab_t = schedule.alpha_bar[t].item()
    ab_prev = schedule.alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
    var = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    mean = ab_prev**0.5 * x0 + max(1 - ab_prev - var, 0.0) ** 0.5 * eps
    return mean, torch.full_like(mean, var**0.5)


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_start: Tensor,
    start_step: int | None = None,
    *,
    variance: str = "posterior",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling from timestep ``start_step - 1`` down to x_0, one step per timestep."""
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown DDPM variance {variance!r}; choose one of {DDPM_VARIANCES}")
    start_step = start_step or schedule.T
    x = x_start
    for i, step in enumerate(range(start_step - 1, -1, -1)):
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0, _ = _x0_and_eps(schedule, x, t, eps_fn(x, t), clip_x0)
        mean, post_var = schedule.q_posterior(x0, x, t)
        if step > 0:
            var = post_var if variance == "posterior" else schedule.gather("betas", t, x)
            x = mean + var.sqrt() * randn_like(x, generator)
        else:
            x = mean
        if callback is not None:
            callback(i, step, x, x0)
    return x


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_start: Tensor,
    timesteps: list[int],
    *,
    eta: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM over decreasing ``timesteps`` (see :func:`ddim_timesteps`), ending at x_0."""
    x = x_start
    for i, step in enumerate(timesteps):
        step_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0, eps = _x0_and_eps(schedule, x, t, eps_fn(x, t), clip_x0)
        mean, std = ddim_step(schedule, x, x0, eps, step, step_prev, eta)
        x = mean + std * randn_like(x, generator) if eta > 0 and step_prev >= 0 else mean
        if callback is not None:
            callback(i, step, x, x0)
    return x
