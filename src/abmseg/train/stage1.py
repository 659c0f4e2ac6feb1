"""One optimisation step of stage 1: CycleGAN + MP-FPSN (or MP-FPSN alone for ``ct_only``).

Per batch (docs/method.md, "Stage 1: CycleGAN + MP-FPSN", "Training schedule and augmentation"):

1. Generator step. Discriminators frozen; ``images = CycleGAN(ct, pet)``;
   ``loss = generator_objective(...)["total"] + Dice+CE(MP-FPSN(ct, fake_pet), label)`` with
   ``fake_pet`` detached unless the variant is joint. ONE Adam over both generators and MP-FPSN:
   with a detached pseudo-PET that equals two separate Adams (Adam is per-parameter), and for the
   joint variant it is the joint optimisation the paper describes.
2. Discriminator step. Discriminators unfrozen; ``discriminator_objective`` (pooled, detached
   fakes); its own Adam.

``ct_only`` runs only the segmentation loss of MP-FPSN(ct). Every term comes back detached, under
the names the loss logs use (``total`` first: generators + segmentation [+ diffusion]).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from abmseg.models.cyclegan import CycleGAN, set_requires_grad
from abmseg.models.cyclegan_losses import CycleGANLoss
from abmseg.models.diffusion.losses import FeatureFn
from abmseg.models.seg_losses import SegmentationLoss
from abmseg.train.networks import Networks
from abmseg.variants import VariantSpec


class CycleGANView:
    """The CycleGAN's four networks as a training step calls them (each DDP-wrapped or plain).

    ``CycleGANLoss`` only reads the four attributes and calls the model, so a view lets the
    generator step use DDP generators with plain (frozen) discriminators and the discriminator
    step the reverse: a DDP module must only run forward when its gradients will be reduced.
    """

    def __init__(
        self, g_ct2pet: nn.Module, g_pet2ct: nn.Module, d_pet: nn.Module, d_ct: nn.Module
    ) -> None:
        self.g_ct2pet, self.g_pet2ct, self.d_pet, self.d_ct = g_ct2pet, g_pet2ct, d_pet, d_ct

    def __call__(self, ct: Tensor, pet: Tensor) -> dict[str, Tensor]:
        return CycleGAN.forward(self, ct, pet)  # type: ignore[arg-type]  # same attributes


@dataclass
class StepModules:
    """Everything a step needs: plain and wrapped networks, losses, optimizers, autocast."""

    spec: VariantSpec
    nets: Networks  # plain modules (state dicts, non-forward methods)
    mpfpsn: nn.Module  # wrapped for DDP where distributed
    seg_loss: SegmentationLoss
    optimizers: dict[str, Optimizer]
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext
    gan_loss: CycleGANLoss | None = None
    g_view: CycleGANView | None = None
    d_view: CycleGANView | None = None
    diffusion: nn.Module | None = None  # wrapped ConditionalDiffusion (stage 2)
    feature_fn: FeatureFn | None = None  # frozen perceptual features (stage 2, per epoch)
    spet_t_fraction: float = 0.5  # stage 2: one-step sPET timesteps in [0, fraction * T)
    spet_warmup: bool = False  # stage 2, set per epoch: MP-FPSN reads the pseudo-PET instead
    seg_grad_into_denoiser: bool = True  # joint variant: the segmentation loss trains the denoiser

    def discriminators(self) -> list[nn.Module]:
        assert self.nets.cyclegan is not None
        return self.nets.cyclegan.discriminators()


def prefixed(terms: dict[str, Tensor], prefix: str, total_name: str) -> dict[str, Tensor]:
    """Detached copies, ``total`` renamed to ``total_name`` and other keys given ``prefix``."""
    return {(total_name if k == "total" else prefix + k): v.detach() for k, v in terms.items()}


def generator_terms(m: StepModules, ct: Tensor, pet: Tensor) -> tuple[dict, dict[str, Tensor]]:
    """Images and generator objective, discriminators frozen (their grads are not needed)."""
    assert m.g_view is not None and m.gan_loss is not None
    set_requires_grad(m.discriminators(), False)
    images = m.g_view(ct, pet)
    terms = m.gan_loss.generator_objective(m.g_view, ct, pet, images)
    if m.gan_loss.lambda_identity == 0:  # not computed: constant zeros would only clutter logs
        terms = {k: v for k, v in terms.items() if not k.startswith("identity_")}
    return images, terms


def discriminator_step(
    m: StepModules, ct: Tensor, pet: Tensor, images: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Update both discriminators on real images and pooled, detached fakes."""
    assert m.d_view is not None and m.gan_loss is not None
    set_requires_grad(m.discriminators(), True)
    optimizer = m.optimizers["disc"]
    optimizer.zero_grad(set_to_none=True)
    with m.autocast():
        terms = m.gan_loss.discriminator_objective(m.d_view, ct, pet, images)
    terms["total"].backward()
    optimizer.step()
    return prefixed(terms, "", "disc_total")


def stage1_step(m: StepModules, ct: Tensor, pet: Tensor, label: Tensor) -> dict[str, Tensor]:
    """Generator(+segmentation) step, then discriminator step; returns every term, detached."""
    optimizer = m.optimizers["gen"]
    optimizer.zero_grad(set_to_none=True)
    gen: dict[str, Tensor] = {}
    images: dict[str, Tensor] = {}
    spet = None
    with m.autocast():
        if m.spec.uses_cyclegan:
            images, gen = generator_terms(m, ct, pet)
            spet = images["fake_pet"] if m.spec.joint else images["fake_pet"].detach()
        seg = m.seg_loss(m.mpfpsn(ct, spet), label)
        total = seg["total"] + gen["total"] if gen else seg["total"]
    total.backward()
    optimizer.step()
    out = {"total": total.detach()}
    if gen:
        out.update(prefixed(gen, "", "gen_total"))
    out.update(prefixed(seg, "seg_", "seg_total"))
    if m.spec.uses_cyclegan:
        out.update(discriminator_step(m, ct, pet, images))
    return out


def no_grad_unless(flag: bool) -> AbstractContextManager:
    """``torch.no_grad()`` unless ``flag`` (joint variants keep the graph)."""
    return contextlib.nullcontext() if flag else torch.no_grad()


__all__ = [
    "CycleGANView",
    "StepModules",
    "discriminator_step",
    "generator_terms",
    "no_grad_unless",
    "prefixed",
    "stage1_step",
]
