"""The networks of one variant and stage, their state, and the model bundle inference loads.

A bundle (``model.pt``) is plain data (tensors, numbers, strings, containers) so it loads with
``weights_only=True``: the presets that built each network travel with its weights, which makes a
bundle self-describing (no config needed to rebuild the networks) and safe to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import abmseg
from abmseg.atomic import atomic_path
from abmseg.models.cyclegan import CycleGAN, ResnetGenerator
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.presets import load_model_preset
from abmseg.train.variants import VariantSpec, get_variant

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


def inference_diffusion_preset(preset: dict) -> dict:
    """The preset without a VGG16 loss network: its weights file is a training-only input."""
    loss = dict(preset.get("loss") or {})
    if loss.get("perceptual_network") == "vgg16":
        loss["perceptual_network"] = "none"
    return {**preset, "loss": loss}


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
        """Flat name -> module, the names used in checkpoints and bundles."""
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
        """CPU copies of every state dict (checkpoints and bundles are device-independent)."""
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


def write_bundle(path: str | Path, bundle: dict[str, Any]) -> Path:
    """``torch.save`` the bundle to a temporary file and rename it onto ``path`` (atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(bundle, tmp)
    return path


def make_bundle(
    variant: str,
    stage: int,
    settings: dict[str, Any],
    presets: dict[str, dict],
    nets: Networks,
    train_patients: list[str],
    epochs: int,
    global_epochs: int,
    history: list[dict],
) -> dict[str, Any]:
    """The ``model.pt`` content: weights plus everything needed to rebuild and audit them."""
    return {
        "variant": variant,
        "stage": stage,
        "model_preset": settings["model_preset"],
        "image_size": settings["image_size"],
        "settings": settings,
        "presets": presets,
        "state": nets.state(),
        "train_patients": list(train_patients),
        "epochs": epochs,  # epochs of this stage
        "global_epochs": global_epochs,  # epochs since stage 1 began
        "history": history,
        "abmseg_version": abmseg.__version__,
    }


def read_bundle(path: str | Path) -> dict[str, Any]:
    """The raw bundle dict (state dicts on the CPU), with a clear error for a wrong file."""
    path = Path(path)
    bundle = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(bundle, dict) or "variant" not in bundle or "state" not in bundle:
        raise ValueError(f"{path} is not an abmseg model bundle (no 'variant'/'state')")
    return bundle


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A bundle's metadata plus its inference networks, built, loaded, on ``device``, in eval mode.

    Adds ``mpfpsn`` and, where the variant has them, ``g_ct2pet`` (CycleGAN CT->PET generator)
    and ``diffusion`` (ConditionalDiffusion); absent keys mean the variant does not use that
    network. ``state`` (the raw weights) is dropped.
    """
    bundle = read_bundle(path)
    presets = bundle["presets"]
    state = bundle["state"]
    get_variant(bundle["variant"])  # a clear error for bundles of unknown variants
    out = {k: v for k, v in bundle.items() if k != "state"}
    modules: dict[str, nn.Module] = {"mpfpsn": MPFPSN.from_preset(presets["mpfpsn"])}
    if "cyclegan" in presets and "g_ct2pet" in state:
        modules["g_ct2pet"] = ResnetGenerator.from_preset(presets["cyclegan"])
    if "diffusion" in presets and "diffusion" in state:
        preset = inference_diffusion_preset(dict(presets["diffusion"]))
        modules["diffusion"] = ConditionalDiffusion.from_preset(preset)
    for name, module in modules.items():
        module.load_state_dict(state[name])
        out[name] = module.to(device).eval()
    return out


__all__ = [
    "CYCLEGAN_PARTS",
    "Networks",
    "load_bundle",
    "make_bundle",
    "read_bundle",
    "variant_presets",
    "write_bundle",
]
