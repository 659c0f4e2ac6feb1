"""The paper's ablation (Table 5) as data: which networks each variant trains and how they meet.

One training loop serves every variant; the flags below are the only place the variants differ,
so an ablation row can never silently drift from the method's code path.

=========  ========  =========  ======  =========  =====
variant    CycleGAN  diffusion  fusion  MP-FPSN    joint
=========  ========  =========  ======  =========  =====
ct_only    no        no         add     CT         no
cyclegan   yes       no         concat  CT + sPET  no
diffusion  yes       yes        concat  CT + sPET  no
fusion     yes       yes        add     CT + sPET  no
full       yes       yes        add     CT + sPET  yes
=========  ========  =========  ======  =========  =====

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
    fusion: Literal["add", "concat"]
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
    "fusion": VariantSpec(True, True, "add", "ct+spet", False),
    "full": VariantSpec(True, True, "add", "ct+spet", True),
}


def get_variant(name: str) -> VariantSpec:
    """The spec of ``name``, or a ValueError listing the valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}") from None


def has_stage2(variant: str) -> bool:
    """Stage 2 adds the diffusion refiner, so only variants that use it have one."""
    return get_variant(variant).uses_diffusion


def final_stage(variant: str) -> int:
    """The stage whose bundle is the variant's finished model (what inference loads)."""
    return 2 if has_stage2(variant) else 1


__all__ = ["VARIANTS", "VariantSpec", "final_stage", "get_variant", "has_stage2"]
