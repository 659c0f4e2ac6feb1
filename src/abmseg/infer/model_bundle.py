"""A model bundle folder: one trained variant, everything inference needs, described by itself.

Layout::

    <folder>/
      bundle.json          the manifest: format and abmseg version, variant and stage, the presets
                           that rebuild each network, preprocessing (CT window, crop margin, grid,
                           SUV ceiling), sampler, region table, training record, provenance, and
                           per network its weight file, SHA-256 and size
      weights/<name>.pt    one state dict per network inference uses: mpfpsn, and where the
                           variant has them g_ct2pet (CycleGAN CT->PET) and diffusion

Manifest last: writing removes the old bundle.json first and writes the new one only after every
weight file is in place, so a folder without bundle.json is an unfinished bundle and is refused.
Loading checks format, version and each file's size and SHA-256 before any file is unpickled
(``weights_only=True``), so a changed or damaged bundle never reaches a network.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

import abmseg
from abmseg.atomic import write_json
from abmseg.errors import ConfigError, PatientDataError
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
from abmseg.settings import to_section
from abmseg.variants import get_variant

MANIFEST = "bundle.json"
BUNDLE_FORMAT = "abmseg-model-bundle"
FORMAT_VERSION = 1
WEIGHTS = "weights"
# Inference network -> (key of its preset in ``presets``, builder from that preset).
BUILDERS = {
    "mpfpsn": ("mpfpsn", MPFPSN.from_preset),
    "g_ct2pet": ("cyclegan", ResnetGenerator.from_preset),
    "diffusion": ("diffusion", ConditionalDiffusion.from_preset),
}
REQUIRED = (
    "abmseg_version", "variant", "stage", "model_preset", "image_size", "presets", "networks",
    "preprocessing", "sampler", "regions", "training", "provenance", "manifest_sha256",
)  # fmt: skip
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
FIX_COPY = "copy the bundle again from its source, or rerun the training and the bundle rule"
FIX_POINT = (
    "point to a folder written by the pipeline's bundle rule (results/bundles/<variant>), "
    "or rerun that rule"
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


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``manifest_sha256`` field: an
    edited bundle.json (settings, regions, recorded weight hashes) no longer matches it."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
) -> dict:
    """Turn a training's ``model.pt`` into a bundle folder; returns the manifest written.

    Only the inference networks are kept, so a bundle is what a site needs to run the model
    and nothing it could mistake for a training checkpoint.
    """
    folder, _ = _locate(folder)
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

    @property
    def variant(self) -> str:
        return self.manifest["variant"]

    @property
    def preprocessing(self) -> dict:
        return self.manifest["preprocessing"]

    @property
    def sampler(self) -> dict:
        return self.manifest["sampler"]

    @property
    def regions(self) -> dict[str, int]:
        return self.manifest["regions"]

    def config(self) -> dict[str, Any]:
        """The bundle's settings in the workflow config's form, so the stages' own
        ``from_config`` read them exactly as they read a run's config."""
        return bundle_config(self.manifest)

    def inference_settings(self) -> InferenceSettings:
        """The sampler and body threshold the bundle was written with, as predict_volume takes."""
        return InferenceSettings.from_config(self.config())

    def predictor(self) -> Predictor:
        suv_ceiling = NormaliseSettings.from_config(self.config()).suv_ceiling
        return Predictor(self.networks, self.device, self.inference_settings(), suv_ceiling)


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
    return config


@dataclass(frozen=True)
class BundleSettings:
    """What rule bundle records besides the weights: the preprocessing, sampler and region
    table new patients must be predicted with (from the run's config)."""

    preprocessing: dict[str, Any]
    sampler: dict[str, Any]
    regions: dict[str, int]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BundleSettings:
        inference = InferenceSettings.from_config(config)
        preprocessing = {
            "crop": to_section(CropSettings.from_config(config)),
            "normalise": to_section(NormaliseSettings.from_config(config)),
            "body_threshold": inference.body_threshold,
        }
        regions = ConvertSettings.from_config(config).regions
        return cls(preprocessing, inference.sampler_record(), dict(regions))


def _locate(folder: str | Path) -> tuple[Path, Path]:
    """(bundle folder, its bundle.json) from either of the two."""
    path = Path(folder)
    if path.name == MANIFEST and not path.is_dir():
        return path.parent, path
    return path, path / MANIFEST


def _read_manifest(root: Path, manifest_path: Path, patient: str | None) -> dict:
    """The manifest after the checks that need no weight file (format, keys, version, variant)."""

    def refuse(problem: str, fix: str = FIX_COPY) -> PatientDataError:
        return PatientDataError(patient, manifest_path, problem, fix)

    if not manifest_path.is_file():
        if (root / WEIGHTS).is_dir():
            raise refuse(
                "not a model bundle: no bundle.json, though weights/ is there: an unfinished "
                "bundle (writing stopped before its manifest)",
                "rerun the pipeline's bundle rule to write it again",
            )
        raise refuse("not a model bundle: no bundle.json", FIX_POINT)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"bundle.json is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise refuse(
            f"bundle.json is not an {BUNDLE_FORMAT} manifest (format {found!r})", FIX_POINT
        )
    version, running = manifest.get("abmseg_version"), abmseg.__version__
    other = f"install abmseg=={version} to use this bundle, or retrain with this version"
    if manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version")
        raise refuse(
            f"bundle format version {found!r}; abmseg {running} reads {FORMAT_VERSION}", other
        )
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise refuse(f"bundle.json lacks the key(s) {', '.join(missing)}")
    if version != running:
        raise refuse(f"the bundle was written by abmseg {version}, this is abmseg {running}", other)
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise refuse(
            "bundle.json does not match its own manifest_sha256: it was edited after it was "
            "written (settings, regions or recorded weight hashes may no longer be the trained "
            "model's)"
        )
    try:
        spec = get_variant(manifest["variant"])
    except ValueError as exc:
        fix = "use a bundle of a known variant, or the abmseg that wrote it"
        raise refuse(str(exc), fix) from None
    expected = ["mpfpsn"]  # the networks variant_presets gives this variant and stage
    if spec.uses_cyclegan:
        expected.append("g_ct2pet")
    if spec.uses_diffusion and manifest["stage"] == 2:
        expected.append("diffusion")
    networks, presets = manifest["networks"], manifest["presets"]
    if not isinstance(presets, dict):
        raise refuse(f"bundle.json's presets are not a table ({type(presets).__name__})")
    if not isinstance(networks, dict) or sorted(networks) != sorted(expected):
        found = sorted(networks) if isinstance(networks, dict) else networks
        raise refuse(
            f"bundle.json lists the networks {found}; variant {manifest['variant']} stage "
            f"{manifest['stage']} uses {sorted(expected)}"
        )
    lacking = [n for n in networks if not isinstance(presets.get(BUILDERS[n][0]), dict)]
    if lacking:
        raise refuse(f"bundle.json has no preset for the network(s) {', '.join(lacking)}")
    return manifest


def _weight_file(root: Path, name: str, entry: Any, patient: str | None) -> Path:
    """The path of one network's weights, refused when it leaves the folder or is missing."""

    def refuse(problem: str, where: Path = root / MANIFEST) -> PatientDataError:
        return PatientDataError(patient, where, problem, FIX_COPY)

    if not isinstance(entry, dict) or not {"file", "sha256", "bytes"} <= set(entry):
        raise refuse(f"network {name} lacks its file, sha256 or bytes")
    relative = PurePosixPath(str(entry["file"]))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise refuse(f"network {name}'s file {str(relative)!r} lies outside the bundle folder")
    if not (root / relative).is_file():
        raise refuse(f"the weight file of network {name} is missing", root / relative)
    return root / relative


def _check_digest(path: Path, entry: dict, size: int, sha: str, patient: str | None) -> None:
    """Refuse a weight file whose size or SHA-256 differs from what the manifest recorded."""
    changed = "the bundle was changed or damaged after it was written"
    if size != entry["bytes"]:
        problem = f"{path.name} has {size} bytes, bundle.json records {entry['bytes']}: {changed}"
    elif sha != entry["sha256"]:
        problem = f"{path.name} has SHA-256 {sha}, bundle.json records {entry['sha256']}: {changed}"
    else:
        return
    raise PatientDataError(patient, path, problem, FIX_COPY)


def verify_model_bundle(folder: str | Path, patient: str | None = None) -> dict:
    """Manifest after every check except building networks (format, version, files, SHA-256).

    Cheap enough for a workflow to run before it schedules inference on every patient.
    """
    root, manifest_path = _locate(folder)
    manifest = _read_manifest(root, manifest_path, patient)
    for name, entry in manifest["networks"].items():
        path = _weight_file(root, name, entry, patient)
        _check_digest(path, entry, path.stat().st_size, sha256_file(path), patient)
    return manifest


def resolve_configured_bundle(
    path: str | Path, results: str | Path = "results"
) -> tuple[str, dict]:
    """config 'model_bundle' as an absolute folder and its verified manifest (format, version,
    SHA-256 of the manifest and of every weight file), checked before any job is planned. It may
    not lie inside the run's ``results`` folder: a rule writes there, and predicting from it
    could retrain it. A relative path is taken from the working directory."""
    folder = Path(path).resolve()
    if Path(results).resolve() in folder.parents:
        raise ConfigError(
            f"config 'model_bundle' {path} lies inside this run's results/ folder, which the "
            "pipeline rewrites",
            "leave model_bundle null to use this run's own bundle, or copy the bundle folder "
            "elsewhere and point to the copy",
        )
    if not (folder / MANIFEST).is_file():
        raise ConfigError(
            f"config 'model_bundle' {path} holds no {MANIFEST}",
            "point it to a bundle folder written by the rule 'bundle' (a copy of "
            "results/bundles/<variant> of a finished run)",
        )
    try:
        return str(folder), verify_model_bundle(folder)
    except PatientDataError as error:
        raise ConfigError(
            f"config 'model_bundle': {error.problem} ({error.path})", error.fix
        ) from None


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
    root, manifest_path = _locate(folder)
    manifest = _read_manifest(root, manifest_path, patient)
    device = device or pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    files = {}
    for name, entry in manifest["networks"].items():  # every file checked before any unpickling
        path = _weight_file(root, name, entry, patient)
        data = path.read_bytes()
        _check_digest(path, entry, len(data), hashlib.sha256(data).hexdigest(), patient)
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
