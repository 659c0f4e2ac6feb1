"""The trained-model file (``model.pt``): what training writes and inference and bundles read.

A trained model is plain data (tensors, numbers, strings, containers), so it loads with
``weights_only=True``: the presets that built each network travel with its weights, which makes the
file self-describing (no config needed to rebuild the networks) and safe to load. Training
(``abmseg.train``) writes it, inference (``abmseg.infer``) reads it; neither imports the other.
A *bundle* is something else: the shareable folder results/bundles/<variant>
(``abmseg.infer.model_bundle``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import abmseg
from abmseg.atomic import atomic_path
from abmseg.models.cyclegan import ResnetGenerator
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.variants import get_variant


def inference_diffusion_preset(preset: dict) -> dict:
    """The preset without a VGG16 loss network: its weights file is a training-only input."""
    loss = dict(preset.get("loss") or {})
    if loss.get("perceptual_network") == "vgg16":
        loss["perceptual_network"] = "none"
    return {**preset, "loss": loss}


def trained_model_content(
    variant: str,
    stage: int,
    settings: dict[str, Any],
    presets: dict[str, dict],
    state: dict[str, dict[str, torch.Tensor]],
    train_patients: list[str],
    epochs: int,
    global_epochs: int,
    history: list[dict],
    validation_patients: list[str] | None = None,
) -> dict[str, Any]:
    """The ``model.pt`` content: weights (``Networks.state()``) plus what rebuilds and audits
    them."""
    return {
        "variant": variant,
        "stage": stage,
        "model_preset": settings["model_preset"],
        "image_size": settings["image_size"],
        "settings": settings,
        "presets": presets,
        "state": state,
        "train_patients": list(train_patients),
        "validation_patients": list(validation_patients or []),  # scored each epoch, not fitted
        "epochs": epochs,  # epochs of this stage
        "global_epochs": global_epochs,  # epochs since stage 1 began
        "history": history,
        "abmseg_version": abmseg.__version__,
    }


def save_torch_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save`` to a temporary file renamed onto ``path`` (atomic), byte-reproducibly.

    Saved to a path, torch names the archive's inner folder after the file, here the random
    temporary name, so equal weights gave different bytes and sha256 (a bundle's digests changed
    with every write). Through a file handle the folder is always ``archive``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
    return path


def write_trained_model(path: str | Path, content: dict[str, Any]) -> Path:
    """The trained model (``trained_model_content``) as ``path``, atomically."""
    return save_torch_atomic(path, content)


def read_trained_model(path: str | Path) -> dict[str, Any]:
    """The raw trained-model dict (state dicts on the CPU), with a clear error for a wrong file."""
    path = Path(path)
    model = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(model, dict) or "variant" not in model or "state" not in model:
        raise ValueError(f"{path} is not an abmseg trained model (model.pt) (no 'variant'/'state')")
    return model


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A trained model's metadata plus its inference networks, built, loaded, on ``device``, in
    eval mode.

    Adds ``mpfpsn`` and, where the variant has them, ``g_ct2pet`` (CycleGAN CT->PET generator)
    and ``diffusion`` (ConditionalDiffusion); absent keys mean the variant does not use that
    network. ``state`` (the raw weights) is dropped.
    """
    model = read_trained_model(path)
    presets = model["presets"]
    state = model["state"]
    get_variant(model["variant"])  # a clear error for a model of an unknown variant
    out = {k: v for k, v in model.items() if k != "state"}
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


def load_failure_reason(exc: BaseException) -> str:
    """The informative line of a torch.load failure (its unpickler errors are paragraphs)."""
    text = str(exc).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = " ".join(text.split(marker, 1)[1].split()).split(" Check the documentation")[0]
        text = f"unpickling failed: {text}"
    elif text:
        text = text.splitlines()[0].split(". ")[0]
    else:
        text = type(exc).__name__
    return text[:200]
