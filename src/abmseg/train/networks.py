"""The networks one variant trains in one stage, and their state.

What a finished stage writes (``model.pt``) is the trained-model file of
``abmseg.models.trained_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from abmseg.models.cyclegan import CycleGAN
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.presets import load_model_preset
from abmseg.variants import VariantSpec

CYCLEGAN_PARTS = ("g_ct2pet", "g_pet2ct", "d_pet", "d_ct")


def variant_presets(spec: VariantSpec, model_preset: str, stage: int) -> dict[str, dict]:
    """Preset dict per network this variant trains in ``stage``; MP-FPSN with its ablation flags."""
    presets: dict[str, dict] = {}
    if spec.uses_cyclegan:
        presets["cyclegan"] = load_model_preset("cyclegan", model_preset)
    if spec.uses_diffusion and stage == 2:
        presets["diffusion"] = load_model_preset("diffusion", model_preset)
    mpfpsn = load_model_preset("mpfpsn", model_preset)
    presets["mpfpsn"] = {**mpfpsn, "fusion": spec.fusion, "modalities": spec.modalities}
    return presets


@dataclass
class Networks:
    """The variant's networks; ``cyclegan``/``diffusion`` are None where the variant lacks them."""

    mpfpsn: MPFPSN
    cyclegan: CycleGAN | None = None
    diffusion: ConditionalDiffusion | None = None

    @classmethod
    def build(cls, presets: dict[str, dict]) -> Networks:
        """Instantiate every network named in ``presets`` (see ``variant_presets``)."""
        cyclegan = CycleGAN.from_preset(presets["cyclegan"]) if "cyclegan" in presets else None
        diffusion = None
        if "diffusion" in presets:
            diffusion = ConditionalDiffusion.from_preset(dict(presets["diffusion"]))
        return cls(MPFPSN.from_preset(presets["mpfpsn"]), cyclegan, diffusion)

    def parts(self) -> dict[str, nn.Module]:
        """Flat name -> module, the names used in checkpoints and trained models."""
        out: dict[str, nn.Module] = {}
        if self.cyclegan is not None:
            out.update({name: getattr(self.cyclegan, name) for name in CYCLEGAN_PARTS})
        out["mpfpsn"] = self.mpfpsn
        if self.diffusion is not None:
            out["diffusion"] = self.diffusion
        return out

    def to(self, device: torch.device | str) -> Networks:
        for module in self.parts().values():
            module.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        for module in self.parts().values():
            module.train(mode)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU copies of every state dict (checkpoints and model.pt are device-independent)."""
        return {
            name: {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            for name, module in self.parts().items()
        }

    def load_state(self, state: dict[str, dict[str, torch.Tensor]], only: tuple = ()) -> None:
        """Load the state dicts of ``only`` (default: every part this object has)."""
        for name, module in self.parts().items():
            if only and name not in only:
                continue
            if name not in state:
                raise KeyError(f"saved state has no network {name!r} (has {sorted(state)})")
            module.load_state_dict(state[name])


__all__ = ["CYCLEGAN_PARTS", "Networks", "variant_presets"]
