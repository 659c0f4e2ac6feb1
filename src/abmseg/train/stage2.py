"""One optimisation step of stage 2: CycleGAN + conditional diffusion + MP-FPSN.

Per batch:

1. Generator step, as in stage 1 (discriminators frozen, ``generator_objective``), plus
   ``L_diff = diffusion.training_loss(pet, ct, feature_fn)`` on the REAL PET (eps-MSE + 0.1
   perceptual; the feature network is a frozen copy of G_PET->CT's encoder, refreshed at the start
   of every epoch so it follows the generator without being trained by the diffusion loss), plus
   the segmentation loss of MP-FPSN(ct, sPET). One backward of
   ``generator objective + segmentation + L_diff``, then two Adam steps: the stage-1 optimizer
   (generators + MP-FPSN, its state carried over from stage 1) and the diffusion's own Adam
   (new in stage 2; a separate optimizer keeps stage 1's optimizer state loadable as is). The
   sum is one backward only: with detached images the terms touch disjoint parameters, so this
   equals separate backward passes; for the joint variant the segmentation gradient reaches all
   three networks in one pass.
2. Discriminator step, as in stage 1.

The sPET seen by MP-FPSN during training. Inference refines the pseudo-PET with the full reverse
chain (50-1000 denoiser evaluations per slice); doing that for every training batch, and
back-propagating through it for the joint variant, is infeasible. Training therefore uses the
diffusion's ONE-STEP estimate: the pseudo-PET is noised to a random timestep
``t ~ U{0 .. spet_t_fraction x T - 1}`` with ``schedule.q_sample``, the denoiser predicts the
noise under the CT condition (``predict_eps``; no error feedback, exactly like the first step of
an inference chain, which has no earlier x0 estimate) and ``schedule.predict_x0`` inverts the
noising, clipped to [-1, 1] as the samplers do. It is the x0 the sampler itself estimates at
timestep t, costs one denoiser pass, and is differentiable: for the joint variant (``full``) the
segmentation gradient flows into the denoiser and, through the noised pseudo-PET, into
G_CT->PET (with ``seg_grad_into_denoiser`` false, into G_CT->PET only: the denoiser's parameters
are frozen for that pass); otherwise the estimate is computed without a graph. During the first
``spet_warmup_epochs`` of stage 2 MP-FPSN reads the pseudo-PET itself instead (docs/validation.md,
risk 4). Timesteps stop at
``spet_t_fraction`` (default 0.5) of the chain because x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)
amplifies the noise-prediction error by 1/sqrt(alpha_bar) (about 150x at t = T - 1): the upper
half of the chain would hand MP-FPSN mostly saturated noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.train.distributed import unwrap
from abmseg.train.stage1 import (
    StepModules,
    discriminator_step,
    generator_terms,
    no_grad_unless,
    prefixed,
)


def one_step_spet(
    diffusion: ConditionalDiffusion, pseudo_pet: Tensor, ct: Tensor, t_fraction: float = 0.5
) -> Tensor:
    """The diffusion's x0 estimate from ``pseudo_pet`` noised to a random timestep (see above)."""
    schedule = diffusion.schedule
    high = max(1, int(t_fraction * schedule.T))
    t = torch.randint(0, high, (pseudo_pet.shape[0],), device=pseudo_pet.device)
    x_t = schedule.q_sample(pseudo_pet, t, torch.randn_like(pseudo_pet))
    eps = diffusion.predict_eps(x_t, t, diffusion.denoiser.encode_ct(ct))
    x0 = schedule.predict_x0(x_t, t, eps)
    return x0.clamp(-1.0, 1.0) if diffusion.sampler.clip_x0 else x0


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Forward passes inside record no gradient for ``module``'s parameters; gradients still
    flow through it to its inputs (the joint variant with the denoiser detached)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def training_spet(m: StepModules, pseudo_pet: Tensor, ct: Tensor) -> Tensor:
    """What MP-FPSN reads in a stage-2 step: the one-step sPET (the method), or the pseudo-PET
    itself during the warm-up epochs (``StepModules.spet_warmup``)."""
    if m.spet_warmup:
        return pseudo_pet
    diffusion = unwrap(m.diffusion)
    detach = m.spec.joint and not m.seg_grad_into_denoiser
    with frozen_parameters(diffusion) if detach else contextlib.nullcontext():
        return one_step_spet(diffusion, pseudo_pet, ct, m.spet_t_fraction)


def stage2_step(m: StepModules, ct: Tensor, pet: Tensor, label: Tensor) -> dict[str, Tensor]:
    """Generator + diffusion + segmentation step, then discriminator step; detached terms."""
    assert m.diffusion is not None
    optimizers = (m.optimizers["gen"], m.optimizers["diff"])
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    joint = m.spec.joint
    with m.autocast():
        images, gen = generator_terms(m, ct, pet)
        diff = m.diffusion(pet, ct, m.feature_fn)  # DDP-visible call of training_loss
        pseudo_pet = images["fake_pet"] if joint else images["fake_pet"].detach()
        with no_grad_unless(joint):
            spet = training_spet(m, pseudo_pet, ct)
        seg = m.seg_loss(m.mpfpsn(ct, spet), label)
        total = gen["total"] + seg["total"] + diff["total"]
    total.backward()
    for optimizer in optimizers:
        optimizer.step()
    out = {"total": total.detach()}
    out.update(prefixed(gen, "", "gen_total"))
    out.update(prefixed(seg, "seg_", "seg_total"))
    out.update(prefixed(diff, "diff_", "diff_total"))
    out.update(discriminator_step(m, ct, pet, images))
    return out


__all__ = ["frozen_parameters", "one_step_spet", "stage2_step", "training_spet"]
