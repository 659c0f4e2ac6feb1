"""The study's file-level steps without torch (rules fit_baselines, apply_baseline, leakage),
thin over the study modules: read, compute, write atomically. The sampler sweep's steps, which
need the networks, are in abmseg.study.sampler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_json
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import read_nifti


def check_leakage(
    models: Sequence[str | Path],
    fitted: Sequence[str | Path],
    test_patients: Sequence[str],
    test_raw: Sequence[str | Path],
    predictions: Sequence[str | Path],
    labels: Sequence[str | Path],
    regions: Mapping[str, int],
    out: str | Path,
) -> dict[str, Any]:
    """Both leakage checks of abmseg.study.leakage, written to ``out`` (JSON): the lineage of
    every trained model and of the fitted baselines and chosen start step (``fitted``:
    baselines.json, then start_selection.json), and the shuffled control."""
    from abmseg.provenance.lineage import trace_file
    from abmseg.study.leakage import leaks_in_lineage, lineage_summary, shuffled_control

    per_model, leaks, incomplete = {}, [], []
    for target in [*models, *fitted]:
        lineage = trace_file(target).to_dict()
        found = leaks_in_lineage(lineage, test_patients, test_raw)
        leaks += [f"{target}: {line}" for line in found]
        # a result without a record hides everything behind it: the check is then not complete
        incomplete += [f"{target}: no record for {path}" for path in lineage["unrecorded"]]
        per_model[str(target)] = {**lineage_summary(lineage), "leaks": found}
    for path, key in zip(fitted, ("fitted_on", "selected_on"), strict=False):
        chosen_on = read_json(path).get(key, [])
        leaks += [f"{path}: {key} holds test patient {p}" for p in chosen_on if p in test_patients]
    arrays = {}
    for kind, paths in (("pred", predictions), ("label", labels)):
        for patient, path in zip(test_patients, paths, strict=True):
            arrays[kind, patient] = sitk.GetArrayFromImage(read_nifti(path, patient))
    rows = shuffled_control(
        {p: arrays["pred", p] for p in test_patients},
        {p: arrays["label", p] for p in test_patients},
        regions,
    )
    summary = {
        "dice_own_mean": float(np.mean([r["dice_own"] for r in rows])) if rows else None,
        "dice_shuffled_mean": float(np.mean([r["dice_shuffled"] for r in rows])) if rows else None,
    }
    report = {
        "test_patients": list(test_patients),
        "models": per_model,
        "leaks": leaks,
        "incomplete": incomplete,
        "shuffled": {"summary": summary, "patients": rows},
    }
    write_json(out, report)
    return report


def _volume(path: str | Path, patient: str) -> tuple[np.ndarray, tuple[float, ...]]:
    image = read_nifti(path, patient, made_by="crop")
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def fit_baseline_files(
    patients: Sequence[str], volumes: Sequence[str | Path], seed: int, out: str | Path
) -> dict[str, Any]:
    """Fit the CT baselines (and the PET threshold) on the training patients' cropped volumes
    (CT, PET, label per patient, in that order); write their parameters to ``out``."""
    from abmseg.study.baselines import BaselineVolumes, fit_baselines

    if len(volumes) != 3 * len(patients):
        raise ValueError(f"{len(volumes)} volumes for {len(patients)} patients (3 each expected)")
    training = []
    for i, patient in enumerate(patients):
        ct, spacing = _volume(volumes[3 * i], patient)
        pet, _ = _volume(volumes[3 * i + 1], patient)
        label, _ = _volume(volumes[3 * i + 2], patient)
        training.append(BaselineVolumes(patient, ct, pet, label.astype(np.uint8), spacing))
    models = fit_baselines(training, seed=seed)
    data = {"fitted_on": list(patients), **models.to_dict()}
    write_json(out, data)
    return data


def apply_baseline_file(
    method: str,
    patient: str,
    models_json: str | Path,
    ct_path: str | Path,
    pet_path: str | Path,
    out: str | Path,
) -> np.ndarray:
    """One fitted baseline on one patient's cropped CT (and PET for the PET threshold)."""
    from abmseg.io.volume import image_like, write_nifti
    from abmseg.study.baselines import BaselineModels, predict_baseline

    models = BaselineModels.from_dict(read_json(models_json, made_by="fit_baselines"))
    image = read_nifti(ct_path, patient, made_by="crop")
    hu = sitk.GetArrayFromImage(image)
    spacing = tuple(reversed(image.GetSpacing()))
    pet = _volume(pet_path, patient)[0] if method == "pet_threshold" else None
    labels = predict_baseline(models, method, hu, spacing, pet=pet)
    write_nifti(image_like(labels.astype(np.uint8), image), out)
    return labels
