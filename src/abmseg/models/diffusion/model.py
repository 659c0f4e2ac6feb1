"""The conditional diffusion refiner as one module: schedule + denoiser + CT weighting + samplers.

Built from a preset (``models/presets/diffusion.yaml``); ``training_loss`` gives L_diff for one
batch of real PET/CT and ``refine`` turns a CycleGAN pseudo-PET into the sPET. ``forward`` is
``training_loss`` so a DistributedDataParallel wrapper sees the gradient-producing call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from abmseg.models.diffusion.losses import (
    PERCEPTUAL_NETWORKS,
    T_WEIGHTINGS,
    FeatureFn,
    VGG16Features,
    diffusion_loss,
    frozen_feature_extractor,
)
from abmseg.models.diffusion.sampling import (
    DDPM_VARIANCES,
    Callback,
    EpsFn,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    noised_start,
    randn_like,
)
from abmseg.models.diffusion.schedule import NoiseSchedule
from abmseg.models.diffusion.unet import CTConditionedUNet
from abmseg.models.diffusion.weighting import CTWeighting

SAMPLERS = ("ddim", "ddpm")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    """The preset's ``sampler`` section (defaults for :meth:`ConditionalDiffusion.refine`)."""

    kind: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    start_step: int | None = None
    clip_x0: bool = True
    ddpm_variance: str = "posterior"

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.kind!r}; choose one of {SAMPLERS}")
        if self.ddpm_variance not in DDPM_VARIANCES:
            raise ValueError(f"unknown ddpm_variance {self.ddpm_variance!r}")


@dataclass(frozen=True)
class LossConfig:
    """The preset's ``loss`` section (see :mod:`abmseg.models.diffusion.losses`)."""

    perceptual_weight: float = 0.1
    perceptual_network: str = "cyclegan"
    vgg16_weights: str | None = None
    vgg16_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3")
    perceptual_t_weighting: str = "alpha_bar"

    def __post_init__(self) -> None:
        if self.perceptual_network not in PERCEPTUAL_NETWORKS:
            raise ValueError(f"unknown perceptual_network {self.perceptual_network!r}")
        if self.perceptual_t_weighting not in T_WEIGHTINGS:
            raise ValueError(f"unknown perceptual_t_weighting {self.perceptual_t_weighting!r}")
        if self.perceptual_network == "vgg16" and not self.vgg16_weights:
            raise ValueError("perceptual_network 'vgg16' needs loss.vgg16_weights (a local file)")


def _mean_sq(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).flatten(1).mean(dim=1)


class ConditionalDiffusion(nn.Module):
    """CT-conditioned DDPM refining the CycleGAN pseudo-PET.

    See docs/method.md, "Stage 2: conditional diffusion refiner".
    """

    def __init__(
        self,
        schedule: dict[str, Any] | None = None,
        denoiser: dict[str, Any] | None = None,
        weighting: dict[str, Any] | None = None,
        sampler: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.schedule = NoiseSchedule(**(schedule or {}))
        self.denoiser = CTConditionedUNet(**(denoiser or {}))
        self.weighting = CTWeighting(**(weighting or {}))
        self.sampler = SamplerConfig(**(sampler or {}))
        loss = dict(loss or {})
        if "vgg16_layers" in loss:
            loss["vgg16_layers"] = tuple(loss["vgg16_layers"])
        self.loss_config = LossConfig(**loss)
        self._feature_fn: FeatureFn | None = None
        vgg = None
        if self.loss_config.perceptual_network == "vgg16":
            vgg = VGG16Features(self.loss_config.vgg16_weights, self.loss_config.vgg16_layers)
        # Not a submodule: the frozen VGG stays out of state_dict() and parameters().
        object.__setattr__(self, "_vgg", vgg)
        self._warned_no_features = False

    @classmethod
    def from_preset(cls, preset: str | dict[str, Any]) -> ConditionalDiffusion:
        """Build from a preset name of models/presets/diffusion.yaml or an already loaded dict."""
        if isinstance(preset, str):
            from abmseg.models.presets import load_model_preset

            preset = load_model_preset("diffusion", preset)
        return cls(**preset)

    def set_feature_network(self, module: nn.Module, copy_module: bool = True) -> None:
        """Use ``module.features`` (e.g. the CycleGAN's G_PET->CT) frozen, for L_perceptual."""
        self._feature_fn = frozen_feature_extractor(module, copy_module)

    def _resolve_features(self, feature_fn: FeatureFn | None, like: Tensor) -> FeatureFn | None:
        if self.loss_config.perceptual_network == "none" or self.loss_config.perceptual_weight == 0:
            return None
        if feature_fn is not None:
            return feature_fn
        if self._vgg is not None:
            return self._vgg.to(like.device)
        if self._feature_fn is None and not self._warned_no_features:
            log.warning(
                "no feature network for the perceptual loss (perceptual_network=%r): "
                "training with perceptual weight 0",
                self.loss_config.perceptual_network,
            )
            self._warned_no_features = True
        return self._feature_fn

    def predict_eps(
        self,
        x_t: Tensor,
        t: Tensor,
        ct_features: list[Tensor],
        eps_denoise: Tensor | None = None,
    ) -> Tensor:
        """eps_theta(x_t, t, c) with the adaptive CT weight for ``t`` (and the error feedback)."""
        w_ct, w_prev = self.weighting(t, self.schedule.T, eps_denoise)
        return self.denoiser(x_t, t, ct_features=ct_features, w_ct=w_ct, w_prev=w_prev)

    def training_loss(
        self,
        pet_x0: Tensor,
        ct: Tensor,
        feature_fn: FeatureFn | None = None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``mse``, ``perceptual``, ``total`` (and detached mean ``w_ct``) for one real batch.

        ``t`` and ``noise`` are drawn uniformly / standard-normal from ``generator`` unless given.
        """
        batch = pet_x0.shape[0]
        if t is None:
            device = generator.device if generator is not None else pet_x0.device
            t = torch.randint(0, self.schedule.T, (batch,), generator=generator, device=device)
        t = torch.as_tensor(t, device=pet_x0.device).long().reshape(-1).expand(batch)
        noise = randn_like(pet_x0, generator) if noise is None else noise
        x_t = self.schedule.q_sample(pet_x0, t, noise)
        ct_features = self.denoiser.encode_ct(ct)

        eps_denoise = None
        if self.weighting.uses_error and self.weighting.training_error == "true_error":
            with torch.no_grad():
                first = self.predict_eps(x_t, t, ct_features)
                x0_first = self.schedule.predict_x0(x_t, t, first)
                if self.sampler.clip_x0:
                    x0_first = x0_first.clamp(-1.0, 1.0)
                eps_denoise = _mean_sq(x0_first, pet_x0)
        w_ct, w_prev = self.weighting(t, self.schedule.T, eps_denoise)
        eps_pred = self.denoiser(x_t, t, ct_features=ct_features, w_ct=w_ct, w_prev=w_prev)

        features = self._resolve_features(feature_fn, pet_x0)
        x0_hat = self.schedule.predict_x0(x_t, t, eps_pred) if features is not None else None
        sample_weight = None
        if self.loss_config.perceptual_t_weighting == "alpha_bar":
            sample_weight = self.schedule.gather("alpha_bar", t, pet_x0).reshape(-1)
        terms = diffusion_loss(
            noise,
            eps_pred,
            pet_x0,
            x0_hat,
            features,
            self.loss_config.perceptual_weight,
            sample_weight,
        )
        terms["w_ct"] = w_ct.detach().mean()
        return terms

    def forward(
        self,
        pet_x0: Tensor,
        ct: Tensor,
        feature_fn: FeatureFn | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Same as :meth:`training_loss`."""
        return self.training_loss(pet_x0, ct, feature_fn, generator)

    @torch.no_grad()
    def refine(
        self,
        pseudo_pet: Tensor,
        ct: Tensor,
        sampler: str | None = None,
        steps: int | None = None,
        start_step: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        """sPET from the CycleGAN pseudo-PET noised to ``start_step`` and denoised under CT.

        Unset arguments come from the preset's ``sampler`` section; ``steps`` and ``eta`` are
        DDIM's (DDPM takes one step per timestep). Runs in eval mode, restoring the mode after.
        """
        cfg = self.sampler
        kind = sampler or cfg.kind
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind!r}; choose one of {SAMPLERS}")
        start = start_step or cfg.start_step or self.schedule.T
        was_training = self.training
        self.eval()
        try:
            ct_features = self.denoiser.encode_ct(ct)
            eps_fn = self._inference_eps_fn(pseudo_pet, ct_features)
            x = noised_start(self.schedule, pseudo_pet, start, generator)
            if kind == "ddpm":
                return ddpm_sample(
                    eps_fn,
                    self.schedule,
                    x,
                    start,
                    variance=cfg.ddpm_variance,
                    clip_x0=cfg.clip_x0,
                    generator=generator,
                    callback=callback,
                )
            timesteps = ddim_timesteps(start, min(steps or cfg.steps or start, start))
            return ddim_sample(
                eps_fn,
                self.schedule,
                x,
                timesteps,
                eta=cfg.eta if eta is None else eta,
                clip_x0=cfg.clip_x0,
                generator=generator,
                callback=callback,
            )
        finally:
            self.train(was_training)

    def _inference_eps_fn(self, pseudo_pet: Tensor, ct_features: list[Tensor]) -> EpsFn:
        """eps closure that tracks the last x0 estimates to measure eps_denoise without truth."""
        mode = self.weighting.inference_error if self.weighting.uses_error else "none"
        history: list[Tensor] = []  # x0_hat of the previous reverse steps, newest last

        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            err = None
            if mode == "pseudo_pet":
                err = _mean_sq(history[-1], pseudo_pet) if history else torch.zeros_like(t).float()
            elif mode == "self_consistency":
                err = (
                    _mean_sq(history[-1], history[-2])
                    if len(history) >= 2
                    else torch.zeros_like(t).float()
                )
            eps = self.predict_eps(x_t, t, ct_features, err)
            if mode != "none":
                x0 = self.schedule.predict_x0(x_t, t, eps)
                history[:] = [*history[-1:], x0.clamp(-1.0, 1.0) if self.sampler.clip_x0 else x0]
            return eps

        return eps_fn
