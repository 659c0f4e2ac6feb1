"""Adaptive weight of CT guidance vs the previous denoising result (the paper's Table 4).

See docs/method.md, "Adaptive CT weighting" and "Reference results (the paper's tables)".

The method: ``W_CT = W0 exp(-lambda step)``, ``W_prev = 1 - W_CT``,
``alpha = 1 + beta eps_denoise``, ``W_final = W alpha``. Table 4 compares it with other
schedules; every one is selectable:

=============================  =========================================================
``fixed``                      ``w_ct = w0`` (Table 4 rows 0.3 / 0.5 / 0.7)
``linear``                     ``w_ct = 1 - p``            (Table 4's ``1 - t/T``)
``cosine``                     ``w_ct = (1 + cos(pi p)) / 2``
``exponential``                ``w_ct = w0 exp(-lam step)``
``exponential_error_feedback`` ``w_ct = correct(w0 exp(-lam step), 1 + beta eps_denoise)``
=============================  =========================================================

with ``w_prev = 1 - w_ct`` throughout and ``p = step / step_count``.

What "step" is (open in the paper). ``step`` counts reverse steps from the start of the *full*
chain, on a grid of ``step_count`` steps spanning it: ``step = (T - 1 - t) step_count / T``. So
step 0 is the first reverse step (t = T - 1) and early steps lean on CT, as the paper says. The
weight is a function of the timestep alone, so training (random t) and every sampler (DDPM, DDIM
with any number of steps, partial SDEdit starts) feed the network the same (t, w) pairs. With
``step_count = 50`` and lambda = 0.1 the CT weight decays by e^-5 over the chain, and a 50-step
DDIM visits exactly steps 0, 1, ..., 49; ``step_count = T`` is the literal "one step per diffusion
timestep" reading, under which CT guidance is gone after the first ~5 % of a 1000-step chain.

Error feedback (``correct``). The correction multiplies W_CT only: a larger denoising error means
the model's own result is less trustworthy, so CT guidance grows (scaling both weights and
renormalising would cancel alpha). ``correction="clamp"`` (default, the literal formula):
``w_ct = min(w_ct alpha, 1)``, ``w_prev = 1 - w_ct``. ``correction="renormalise"``:
``w_ct = w_ct alpha / (w_ct alpha + w_prev)``, a smooth convex combination.

How the weight enters the model: the fused bottleneck is ``w_ct * (PET queries CT) + w_prev *
(CT queries PET)`` (see :mod:`.attention`).

What eps_denoise is: the mean squared error of the current x0 estimate (x0_hat clipped to
[-1, 1]), per sample.

* Training (``training_error``): ``"true_error"`` (default) runs the denoiser once without gradient
  with the uncorrected weight, measures ``mean((x0_hat - x0)^2)`` against the real PET and trains
  with the corrected weight; ``"none"`` trains with alpha = 1.
* Inference (``inference_error``), where no real PET exists, uses the x0_hat of the previous
  reverse step (0 before the first): ``"pseudo_pet"`` (default) ``mean((x0_hat - pseudo_pet)^2)``,
  the same quantity as in training with the CycleGAN pseudo-PET standing in for the truth;
  ``"self_consistency"`` ``mean((x0_hat_prev - x0_hat_prev2)^2)``, how much the estimate still
  moves; ``"none"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

STRATEGIES = ("fixed", "linear", "cosine", "exponential", "exponential_error_feedback")
CORRECTIONS = ("clamp", "renormalise")
TRAINING_ERRORS = ("true_error", "none")
INFERENCE_ERRORS = ("pseudo_pet", "self_consistency", "none")


def step_from_timestep(t: Tensor | int, T: int, step_count: float) -> Tensor:  # noqa: N803
    """Reverse-step index of timestep ``t`` on a ``step_count``-step grid over the full chain."""
    t = torch.as_tensor(t).to(torch.float64)
    return (T - 1 - t) * (step_count / T)


def correct_weight(w_ct: Tensor, alpha: Tensor, correction: str = "clamp") -> tuple[Tensor, Tensor]:
    """Apply ``alpha`` to W_CT and return (w_ct, w_prev) that still sum to 1."""
    if correction == "clamp":
        w = (w_ct * alpha).clamp(0.0, 1.0)
    elif correction == "renormalise":
        scaled = w_ct * alpha
        w = scaled / (scaled + (1 - w_ct)).clamp_min(1e-12)
    else:
        raise ValueError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
    return w, 1 - w


def ct_weights(
    strategy: str,
    step: Tensor | float,
    *,
    step_count: float = 50,
    w0: float = 0.8,
    lam: float = 0.1,
    beta: float = 1.0,
    eps_denoise: Tensor | float | None = None,
    correction: str = "clamp",
) -> tuple[Tensor, Tensor]:
    """(w_ct, w_prev) at reverse ``step`` (scalar or per-sample tensor) for one Table 4 strategy.

    ``eps_denoise`` is used only by ``exponential_error_feedback``; None means alpha = 1.
    """
    step = torch.as_tensor(step, dtype=torch.float64)
    p = step / step_count
    if strategy == "fixed":
        w = torch.full_like(step, float(w0))
    elif strategy == "linear":
        w = 1 - p
    elif strategy == "cosine":
        w = 0.5 * (1 + torch.cos(math.pi * p))
    elif strategy in ("exponential", "exponential_error_feedback"):
        w = w0 * torch.exp(-lam * step)
    else:
        raise ValueError(f"unknown CT-weight strategy {strategy!r}; choose one of {STRATEGIES}")
    w = w.clamp(0.0, 1.0)
    if strategy == "exponential_error_feedback" and eps_denoise is not None:
        eps = torch.as_tensor(eps_denoise, dtype=torch.float64, device=w.device)
        return correct_weight(w, 1 + beta * eps, correction)
    return w, 1 - w


@dataclass(frozen=True)
class CTWeighting:
    """The preset's ``weighting`` section: maps a timestep (+ optional error) to (w_ct, w_prev)."""

    strategy: str = "exponential_error_feedback"
    w0: float = 0.8
    lam: float = 0.1
    beta: float = 1.0
    step_count: float | None = 50
    correction: str = "clamp"
    training_error: str = "true_error"
    inference_error: str = "pseudo_pet"

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.strategy, STRATEGIES, "strategy"),
            (self.correction, CORRECTIONS, "correction"),
            (self.training_error, TRAINING_ERRORS, "training_error"),
            (self.inference_error, INFERENCE_ERRORS, "inference_error"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown weighting {name} {value!r}; choose one of {allowed}")

    @property
    def uses_error(self) -> bool:
        """Whether eps_denoise changes the weight at all (only the error-feedback strategy)."""
        return self.strategy == "exponential_error_feedback"

    def __call__(
        self,
        t: Tensor,
        T: int,  # noqa: N803
        eps_denoise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-sample (w_ct, w_prev) as float32 tensors on ``t``'s device."""
        t = torch.as_tensor(t).detach()
        step = step_from_timestep(t, T, self.step_count or T)
        err = None if eps_denoise is None else eps_denoise.detach().to(t.device, torch.float64)
        w_ct, w_prev = ct_weights(
            self.strategy,
            step,
            step_count=self.step_count or T,
            w0=self.w0,
            lam=self.lam,
            beta=self.beta,
            eps_denoise=err,
            correction=self.correction,
        )
        return w_ct.float(), w_prev.float()
