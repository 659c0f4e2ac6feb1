"""The paper's ablation (Table 5) as data: which networks each variant trains and how they meet.

One training loop serves every variant; the flags below are the only place the variants differ,
so an ablation row can never silently drift from the method's code path.

============  ========  =========  ======  =========  =====
variant       CycleGAN  diffusion  fusion  MP-FPSN    joint
============  ========  =========  ======  =========  =====
ct_only       no        no         add     CT         no
cyclegan      yes       no         concat  CT + sPET  no
diffusion     yes       yes        concat  CT + sPET  no
early_concat  yes       yes        input   CT + sPET  no
fusion        yes       yes        add     CT + sPET  no
full          yes       yes        add     CT + sPET  yes
============  ========  =========  ======  =========  =====

``joint``: the segmentation loss back-propagates into the synthesis networks (the pseudo-PET /
sPET is not detached); otherwise MP-FPSN sees a detached image and the synthesis networks learn
from their own objectives only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class VariantSpec:
    """What one ablation variant trains (see the module table)."""

    uses_cyclegan: bool
    uses_diffusion: bool
    fusion: Literal["add", "concat", "input"]
    modalities: Literal["ct", "ct+spet"]
    joint: bool

    def __post_init__(self) -> None:
        if self.uses_diffusion and not self.uses_cyclegan:
            raise ValueError("the diffusion refines the CycleGAN pseudo-PET: it needs the CycleGAN")
        if self.uses_cyclegan != (self.modalities == "ct+spet"):
            raise ValueError("a synthetic PET is segmented exactly when a CycleGAN makes one")
        if self.joint and not self.uses_cyclegan:
            raise ValueError("joint optimisation needs synthesis networks to optimise jointly")


VARIANTS: dict[str, VariantSpec] = {
    "ct_only": VariantSpec(False, False, "add", "ct", False),
    "cyclegan": VariantSpec(True, False, "concat", "ct+spet", False),
    "diffusion": VariantSpec(True, True, "concat", "ct+spet", False),
    # not in the paper's table: diffusion with CT and sPET stacked at the input of one encoder,
    # the other reading of its "concatenation" (docs/validation.md, risk 3)
    "early_concat": VariantSpec(True, True, "input", "ct+spet", False),
    "fusion": VariantSpec(True, True, "add", "ct+spet", False),
    "full": VariantSpec(True, True, "add", "ct+spet", True),
}


def get_variant(name: str) -> VariantSpec:
    """The spec of ``name``, or a ValueError listing the valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}") from None


def has_stage2(variant: str, equal_budget: bool = False) -> bool:
    """Stage 2 adds the diffusion refiner, so only variants that use it have one, unless every
    variant gets the same epoch budget (``training.equal_budget``): then a variant without the
    diffusion trains its stage-1 networks on through stage 2's epochs and learning rates."""
    return equal_budget or get_variant(variant).uses_diffusion


def final_stage(variant: str, equal_budget: bool = False) -> int:
    """The stage whose model is the variant's finished model (what inference loads)."""
    return 2 if has_stage2(variant, equal_budget) else 1


def stage1_key(spec: VariantSpec) -> tuple:
    """What stage 1 trains for a variant: the diffusion only joins in stage 2, so variants that
    differ only by it (cyclegan and diffusion) train the very same stage 1."""
    return (spec.uses_cyclegan, spec.fusion, spec.modalities, spec.joint)


def stage1_owner(variant: str) -> str:
    """The variant whose stage-1 model ``variant`` starts stage 2 from: the first variant of the
    table with the same stage 1 (diffusion -> cyclegan), so that stage 1 is trained once."""
    key = stage1_key(get_variant(variant))
    return next(name for name, spec in VARIANTS.items() if stage1_key(spec) == key)


__all__ = [
    "VARIANTS",
    "VariantSpec",
    "final_stage",
    "get_variant",
    "has_stage2",
    "stage1_key",
    "stage1_owner",
]
