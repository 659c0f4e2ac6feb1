"""A model bundle folder: one trained variant, everything inference needs, described by itself.

Layout::

    <folder>/
      bundle.json          the manifest: format and its version ("MAJOR.MINOR"), the abmseg
                           version that wrote it (for information), variant and stage, the presets
                           that rebuild each network, preprocessing (CT window, crop margin, grid,
                           SUV ceiling), sampler, region table, training record, provenance, and
                           per network its weight file, SHA-256 and size
      weights/<name>.pt    one state dict per network inference uses: mpfpsn, and where the
                           variant has them g_ct2pet (CycleGAN CT->PET) and diffusion

Manifest last: writing removes the old bundle.json first and writes the new one only after every
weight file is in place, so a folder without bundle.json is an unfinished bundle and is refused.
Loading checks the format, its major version (any abmseg that reads a bundle's MAJOR loads it,
newer minors included; abmseg.infer.bundle_manifest says why) and each file's size and SHA-256
before any file is unpickled (``weights_only=True``), so a changed or damaged bundle never
reaches a network. The manifest and those checks are in abmseg.infer.bundle_manifest, which
needs no torch (the workflow runs them while it builds its DAG).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import abmseg
from abmseg.atomic import write_json
from abmseg.errors import PatientDataError
from abmseg.infer.bundle_manifest import (
    BUNDLE_FORMAT,
    FIX_COPY,
    FORMAT_VERSION,
    MANIFEST,
    PRESET_KEYS,
    WEIGHTS,
    check_digest,
    locate_bundle,
    manifest_digest,
    read_manifest,
    weight_file,
)
from abmseg.infer.networks import model_maker, pick_device
from abmseg.infer.patient import Predictor
from abmseg.infer.predict import InferenceNetworks, InferenceSettings
from abmseg.io.jsonfile import read_json
from abmseg.models.cyclegan import ResnetGenerator
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.trained_model import (
    inference_diffusion_preset,
    load_failure_reason,
    read_trained_model,
    save_torch_atomic,
)
from abmseg.preprocess.convert import ConvertSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.preprocess.roi import CropSettings
from abmseg.provenance.hashing import sha256_file
from abmseg.provenance.layout import record_path, results_dir_of_output
from abmseg.qa.checks import QaSettings
from abmseg.qa.profile import TrainingProfile
from abmseg.settings import to_section
from abmseg.variants import get_variant

# Inference network -> (key of its preset in ``presets``, builder from that preset).
BUILDERS = {
    name: (PRESET_KEYS[name], build)
    for name, build in (
        ("mpfpsn", MPFPSN.from_preset),
        ("g_ct2pet", ResnetGenerator.from_preset),
        ("diffusion", ConditionalDiffusion.from_preset),
    )
}
# What a bundle must record so inference preprocesses and samples as the pipeline did.
NEEDED = (
    "preprocessing.crop.margin_mm", "preprocessing.normalise.ct_level_hu",
    "preprocessing.normalise.ct_width_hu", "preprocessing.normalise.suv_ceiling",
    "preprocessing.body_threshold", "sampler.sampler", "sampler.steps", "sampler.seed",
)  # fmt: skip
GRID_SLICES = (
    "axial slices padded to a square and resized to image_size (abmseg.slicing); "
    "in-plane and slice spacing of the CT kept"
)


def _json_safe(value: Any) -> Any:
    """Tuples, numpy values and paths as plain JSON types (the manifest must round-trip)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return str(value) if isinstance(value, Path) else value


def _inference_presets(model: dict[str, Any]) -> dict[str, dict]:
    """Presets of the networks inference uses, as load_trained_model picks them (no VGG16)."""
    presets, state = model["presets"], model["state"]
    out = {"mpfpsn": presets["mpfpsn"]}
    if "cyclegan" in presets and "g_ct2pet" in state:
        out["cyclegan"] = presets["cyclegan"]
    if "diffusion" in presets and "diffusion" in state:
        out["diffusion"] = inference_diffusion_preset(dict(presets["diffusion"]))
    return out


def _lacking(settings: dict, dotted: tuple[str, ...]) -> list[str]:
    """The dotted keys (``sampler.steps``) that ``settings`` does not have (a key holding None,
    such as DDPM's ``steps: null``, is present)."""
    out = []
    for key in dotted:
        value: Any = settings
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                out.append(key)
                break
            value = value[part]
    return out


def training_record_path(model_pt: str | Path) -> Path:
    """Where the training job that wrote ``model_pt`` left its provenance record."""
    results = results_dir_of_output(model_pt)
    if results is None:
        raise ValueError(f"{model_pt} is not under a results/ folder: it has no training record")
    return record_path(results, model_pt)


def read_training_record(model_pt: str | Path) -> dict:
    """That record's content: the bundle carries it, so a bundle copied elsewhere still says
    how, from what and with which code it was trained."""
    return read_json(training_record_path(model_pt), made_by=model_maker(model_pt))


def write_model_bundle(
    folder: str | Path,
    model_pt: str | Path,
    *,
    preprocessing: dict,
    sampler: dict,
    regions: dict[str, int],
    provenance: dict | None,
    qa: dict | None = None,
) -> dict:
    """Turn a training's ``model.pt`` into a bundle folder; returns the manifest written.

    Only the inference networks are kept, so a bundle is what a site needs to run the model
    and nothing it could mistake for a training checkpoint.
    """
    folder, _ = locate_bundle(folder)
    missing = _lacking({"preprocessing": preprocessing, "sampler": sampler}, NEEDED)
    if missing:
        raise ValueError(f"a model bundle needs the settings {missing}; they are absent")
    model = read_trained_model(model_pt)
    get_variant(model["variant"])
    presets = _inference_presets(model)
    (folder / MANIFEST).unlink(missing_ok=True)  # from here on the folder is unfinished
    if (folder / WEIGHTS).exists():
        shutil.rmtree(folder / WEIGHTS)  # no stale weight file survives a rewrite
    networks = {}
    for name in [name for name, (key, _) in BUILDERS.items() if key in presets]:
        path = folder / WEIGHTS / f"{name}.pt"
        save_torch_atomic(path, model["state"][name])
        networks[name] = {
            "file": f"{WEIGHTS}/{name}.pt",
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
    size = int(model["image_size"])
    manifest = _json_safe(
        {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "abmseg_version": abmseg.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "variant": model["variant"],
            "stage": int(model["stage"]),
            "model_preset": model["model_preset"],
            "image_size": size,
            "presets": presets,
            "networks": networks,
            "preprocessing": {
                **preprocessing,
                "grid": {"image_size": size, "slices": GRID_SLICES},
            },
            "sampler": sampler,
            "regions": regions,
            "training": {
                "train_patients": list(model.get("train_patients", [])),
                "epochs": model.get("epochs"),
                "global_epochs": model.get("global_epochs"),
                "settings": model.get("settings"),
            },
            "provenance": provenance,
            # the QA flags' settings and the training data's ranges they compare with
            "qa": qa,
        }
    )
    manifest["manifest_sha256"] = manifest_digest(manifest)
    write_json(folder / MANIFEST, manifest)  # last: its presence marks a finished bundle
    return manifest


@dataclass
class ModelBundle:
    """A verified bundle with its networks built, loaded, in eval mode on ``device``."""

    folder: Path
    manifest: dict
    networks: InferenceNetworks
    device: torch.device
    # A sampler chosen for this run instead of the bundle's (abmseg predict on a CPU).
    sampler_override: dict | None = None

    @property
    def variant(self) -> str:
        return self.manifest["variant"]

    @property
    def timesteps(self) -> int | None:
        """The diffusion chain length, None for a variant without diffusion."""
        diffusion = self.networks.diffusion
        return None if diffusion is None else int(diffusion.schedule.T)

    @property
    def preprocessing(self) -> dict:
        return self.manifest["preprocessing"]

    @property
    def sampler(self) -> dict:
        """The sampler predictions use: the override if one was chosen, else the bundle's."""
        return self.sampler_override or self.manifest["sampler"]

    @property
    def regions(self) -> dict[str, int]:
        return self.manifest["regions"]

    def config(self) -> dict[str, Any]:
        """The bundle's settings in the workflow config's form, so the stages' own
        ``from_config`` read them exactly as they read a run's config."""
        return bundle_config({**self.manifest, "sampler": self.sampler})

    def inference_settings(self) -> InferenceSettings:
        """The sampler and body threshold the bundle was written with, as predict_volume takes."""
        return InferenceSettings.from_config(self.config())

    @property
    def training_profile(self) -> TrainingProfile | None:
        """The training data's ranges for the QA flags; None in a bundle written before them."""
        qa = self.manifest.get("qa") or {}
        profile = qa.get("training_profile")
        return None if profile is None else TrainingProfile.from_dict(profile)

    def predictor(self) -> Predictor:
        return Predictor.from_config(
            self.networks, self.device, self.config(), self.training_profile
        )


def bundle_config(manifest: dict) -> dict[str, Any]:
    """A manifest's preprocessing, sampler and regions as a workflow config (the inverse of
    BundleSettings.from_config)."""
    preprocessing, sampler = manifest["preprocessing"], dict(manifest["sampler"])
    config: dict[str, Any] = {
        "regions": manifest["regions"],
        "crop": preprocessing["crop"],
        "normalise": preprocessing["normalise"],
        "inference": {k: v for k, v in sampler.items() if k != "seed"},
    }
    if "seed" in sampler:
        config["seed"] = sampler["seed"]
    if "body_threshold" in preprocessing:
        config["training"] = {"body_threshold": preprocessing["body_threshold"]}
    if (manifest.get("qa") or {}).get("settings"):
        config["qa"] = manifest["qa"]["settings"]
    return config


@dataclass(frozen=True)
class BundleSettings:
    """What rule bundle records besides the weights: the preprocessing, sampler and region
    table new patients must be predicted with (from the run's config)."""

    preprocessing: dict[str, Any]
    sampler: dict[str, Any]
    regions: dict[str, int]
    qa: dict[str, float]  # the QA flags' settings (QaSettings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BundleSettings:
        inference = InferenceSettings.from_config(config)
        preprocessing = {
            "crop": to_section(CropSettings.from_config(config)),
            "normalise": to_section(NormaliseSettings.from_config(config)),
            "body_threshold": inference.body_threshold,
        }
        regions = ConvertSettings.from_config(config).regions
        qa = QaSettings.from_config(config).to_dict()
        return cls(preprocessing, inference.sampler_record(), dict(regions), qa)

    def qa_record(self, training_profile: dict[str, Any] | None) -> dict[str, Any]:
        """bundle.json's ``qa``: the flags' settings and the training profile they compare
        with (None: the flags cannot judge the input CT and say so)."""
        return {"settings": self.qa, "training_profile": training_profile}


def _load_network(
    name: str, data: bytes, presets: dict, path: Path, patient: str | None
) -> nn.Module:
    """Build ``name`` from its preset and load the already verified bytes into it."""
    key, build = BUILDERS[name]
    try:
        module: nn.Module = build(dict(presets[key]))
        module.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise  # the machine, not the bundle
    except Exception as exc:
        raise PatientDataError(
            patient,
            path,
            f"the weights do not fit the {name} network built from bundle.json's presets "
            f"({load_failure_reason(exc)})",
            FIX_COPY,
        ) from None
    return module


def load_model_bundle(
    folder: str | Path,
    *,
    device: torch.device | None = None,
    threads: int = 1,
    patient: str | None = None,
) -> ModelBundle:
    """Verify the bundle, then build its networks from the manifest's presets and load them.

    Each file is read once and hashed in memory, so the bytes unpickled are the bytes checked
    (no window for a file to change between ``verify_model_bundle``'s hash and ``torch.load``).
    """
    root, manifest_path = locate_bundle(folder)
    manifest = read_manifest(root, manifest_path, patient)
    device = device or pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    files = {}
    for name, entry in manifest["networks"].items():  # every file checked before any unpickling
        path = weight_file(root, name, entry, patient)
        data = path.read_bytes()
        check_digest(path, entry, len(data), hashlib.sha256(data).hexdigest(), patient)
        files[name] = (path, data)
    modules = {
        name: _load_network(name, data, manifest["presets"], path, patient).to(device).eval()
        for name, (path, data) in files.items()
    }
    networks = InferenceNetworks(
        mpfpsn=modules["mpfpsn"],
        image_size=int(manifest["image_size"]),
        g_ct2pet=modules.get("g_ct2pet"),
        diffusion=modules.get("diffusion"),
    )
    return ModelBundle(root, manifest, networks, device)
