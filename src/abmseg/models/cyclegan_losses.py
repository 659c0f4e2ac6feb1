"""CycleGAN objectives (docs/method.md, "Losses"): adversarial, cycle and optional identity terms.

Generator objective:
    L_GAN(G_ct2pet, D_pet) + L_GAN(G_pet2ct, D_ct)
    + lambda_cyc * (|G_pet2ct(G_ct2pet(ct)) - ct|_1 + |G_ct2pet(G_pet2ct(pet)) - pet|_1)
    + lambda_identity * (|G_ct2pet(pet) - pet|_1 + |G_pet2ct(ct) - ct|_1)
Discriminator objective: 0.5 * (real -> 1, fake -> 0) per discriminator, fakes detached and drawn
through an :class:`ImagePool`. Each returns a dict of named, unweighted terms plus ``total``
(weighted) so that a trainer can log every term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from abmseg.models.image_pool import ImagePool

if TYPE_CHECKING:
    from abmseg.models.cyclegan import CycleGAN

MODES = ("log", "lsgan")


def adversarial_loss(
    logits: Tensor | Sequence[Tensor], target_is_real: bool, mode: str = "log"
) -> Tensor:
    """GAN loss of patch logits, averaged over the patches of each scale, then over scales.

    ``"log"``: the paper's log-likelihood form, BCE with logits; called with
    ``target_is_real=True`` on fakes it is the non-saturating generator loss -log D(G(x)).
    ``"lsgan"``: least squares, (x - 1)^2 for real targets, x^2 for fake.
    """
    if mode not in MODES:
        raise ValueError(f"unknown adversarial mode {mode!r}; choose one of {list(MODES)}")
    logits_list = [logits] if isinstance(logits, Tensor) else list(logits)
    if not logits_list:
        raise ValueError("adversarial_loss needs at least one logits tensor")
    target = 1.0 if target_is_real else 0.0
    losses = []
    for x in logits_list:
        if mode == "log":
            losses.append(F.binary_cross_entropy_with_logits(x, torch.full_like(x, target)))
        else:
            losses.append(torch.mean((x - target) ** 2))
    return torch.stack(losses).mean()


def cycle_loss(real: Tensor, reconstructed: Tensor) -> Tensor:
    """Mean absolute error of a round trip (L1 keeps edges sharper than L2)."""
    return F.l1_loss(reconstructed, real)


class CycleGANLoss:
    """Generator and discriminator objectives; holds the two image pools (so it has state).

    Args:
        mode: adversarial form, ``"log"`` (paper) or ``"lsgan"``.
        lambda_cyc: weight of the summed cycle terms (paper: 10).
        lambda_identity: absolute weight of the summed identity terms; 0 (default) disables them
            and skips their forward passes. The reference CycleGAN's 0.5 * lambda_cyc = 5.0.
        pool_size: history size of each :class:`ImagePool`; 0 feeds the current fakes only.
        seed: seeds the pools' generators (PET pool ``seed``, CT pool ``seed + 1``).
    """

    def __init__(
        self,
        mode: str = "log",
        lambda_cyc: float = 10.0,
        lambda_identity: float = 0.0,
        pool_size: int = 50,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown adversarial mode {mode!r}; choose one of {list(MODES)}")
        self.mode = mode
        self.lambda_cyc = float(lambda_cyc)
        self.lambda_identity = float(lambda_identity)
        self.pool_pet = ImagePool(pool_size, seed=seed)
        self.pool_ct = ImagePool(pool_size, seed=seed + 1)

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any], seed: int = 0) -> CycleGANLoss:
        """Build from a whole cyclegan preset (its ``loss`` section)."""
        return cls(**preset.get("loss", {}), seed=seed)

    def generator_objective(
        self, model: CycleGAN, ct: Tensor, pet: Tensor, images: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Terms ``gan_pet``, ``gan_ct``, ``cycle_ct``, ``cycle_pet``, ``identity_pet``,
        ``identity_ct`` (unweighted) and ``total``; ``images`` is ``model(ct, pet)``.

        The backward pass also fills the discriminators' gradients: freeze them
        (:func:`abmseg.models.cyclegan.set_requires_grad`) or zero them before their own step.
        """
        terms = {
            "gan_pet": adversarial_loss(model.d_pet(images["fake_pet"]), True, self.mode),
            "gan_ct": adversarial_loss(model.d_ct(images["fake_ct"]), True, self.mode),
            "cycle_ct": cycle_loss(ct, images["rec_ct"]),
            "cycle_pet": cycle_loss(pet, images["rec_pet"]),
        }
        if self.lambda_identity > 0:
            terms["identity_pet"] = cycle_loss(pet, model.g_ct2pet(pet))
            terms["identity_ct"] = cycle_loss(ct, model.g_pet2ct(ct))
        else:
            zero = ct.new_zeros(())
            terms["identity_pet"] = zero
            terms["identity_ct"] = zero
        terms["total"] = (
            terms["gan_pet"]
            + terms["gan_ct"]
            + self.lambda_cyc * (terms["cycle_ct"] + terms["cycle_pet"])
            + self.lambda_identity * (terms["identity_pet"] + terms["identity_ct"])
        )
        return terms

    def discriminator_objective(
        self, model: CycleGAN, ct: Tensor, pet: Tensor, images: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Terms ``d_pet_real``, ``d_pet_fake``, ``d_ct_real``, ``d_ct_fake``, ``d_pet``,
        ``d_ct`` and ``total``; fakes from ``images`` are detached and drawn through the pools.
        """
        fake_pet = self.pool_pet.query(images["fake_pet"].detach())
        fake_ct = self.pool_ct.query(images["fake_ct"].detach())
        terms = {
            "d_pet_real": adversarial_loss(model.d_pet(pet), True, self.mode),
            "d_pet_fake": adversarial_loss(model.d_pet(fake_pet), False, self.mode),
            "d_ct_real": adversarial_loss(model.d_ct(ct), True, self.mode),
            "d_ct_fake": adversarial_loss(model.d_ct(fake_ct), False, self.mode),
        }
        terms["d_pet"] = 0.5 * (terms["d_pet_real"] + terms["d_pet_fake"])
        terms["d_ct"] = 0.5 * (terms["d_ct_real"] + terms["d_ct_fake"])
        terms["total"] = terms["d_pet"] + terms["d_ct"]
        return terms
