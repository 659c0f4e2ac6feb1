"""Forward-process noise schedule q(x_t | x_0) of the diffusion refiner.

See docs/method.md, "Forward process and schedule".

Timesteps are 0-indexed: ``t = 0`` is the paper's first noising step i = 1 and ``t = T - 1`` the
last, so ``alpha_bar[t] = prod_{i <= t} (1 - beta_i)``. The tables are kept in float64 (products of
1000 factors lose precision in float32) and cast to the data's dtype and device on use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULE_KINDS = ("linear", "cosine")


def _linear_betas(T: int, beta_start: float, beta_end: float, scale_to_T: bool) -> Tensor:  # noqa: N803
    # Scaling by 1000 / T keeps alpha_bar at the last step near zero for short chains (Table 3
    # sweeps T = 100..2000); without it T = 100 would leave ~37 % of the signal at t = T - 1.
    # Very short chains (T < 21) would exceed beta = 1: capped at 0.999 like the cosine schedule.
    scale = 1000.0 / T if scale_to_T else 1.0
    betas = torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)
    return betas.clamp(max=0.999)


def _cosine_betas(T: int, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:  # noqa: N803
    # Nichol & Dhariwal (2021): alpha_bar(s) = cos^2(((s / T + offset) / (1 + offset)) pi / 2).
    s = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    """Betas, alphas and cumulative products with the closed forms the loss and samplers need."""

    def __init__(
        self,
        T: int = 1000,  # noqa: N803 - the paper's symbol
        kind: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        scale_betas_to_T: bool = True,  # noqa: N803
    ) -> None:
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T
        self.kind = kind
        if kind == "linear":
            betas = _linear_betas(T, beta_start, beta_end, scale_betas_to_T)
        elif kind == "cosine":
            betas = _cosine_betas(T)
        else:
            raise ValueError(f"unknown schedule kind {kind!r}; choose one of {SCHEDULE_KINDS}")
        if not (betas.gt(0).all() and betas.lt(1).all()):
            raise ValueError(f"betas must lie in (0, 1); got [{betas.min()}, {betas.max()}]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # q(x_{t-1} | x_t, x_0): variance beta_tilde and the two mean coefficients (Ho et al. eq 7)
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_mean_coef_x0 = betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_mean_coef_xt = (
            (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)
        )
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, kind={self.kind!r})"

    def gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at timesteps ``t`` (shape (B,)), shaped to broadcast against ``like``."""
        key = (name, like.device, like.dtype)
        table = self._cache.get(key)
        if table is None:
            table = getattr(self, name).to(device=like.device, dtype=like.dtype)
            self._cache[key] = table
        t = torch.as_tensor(t, device=like.device).long().reshape(-1)
        if t.numel() == 1 and like.shape[0] != 1:
            t = t.expand(like.shape[0])
        return table[t].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, the closed-form forward jump."""
        ab = self.gather("alpha_bar", t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0); the variance is broadcastable, not full."""
        mean = (
            self.gather("posterior_mean_coef_x0", t, xt) * x0
            + self.gather("posterior_mean_coef_xt", t, xt) * xt
        )
        return mean, self.gather("posterior_variance", t, xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert q_sample for x_0 given a noise estimate (how the loss and samplers get x0_hat)."""
        ab = self.gather("alpha_bar", t, xt)
        return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Invert q_sample for eps given x_0 (re-derives eps after x0_hat has been clipped)."""
        ab = self.gather("alpha_bar", t, xt)
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
