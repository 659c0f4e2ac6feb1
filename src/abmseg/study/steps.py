"""The study's file-level steps (one per rule), thin over the study modules: read, compute,
write atomically."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_json
from abmseg.evaluate.patient import EvaluateSettings
from abmseg.infer.predict import InferenceSettings
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import read_nifti
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.study.plan import StudyPlan

logger = logging.getLogger(__name__)


def scored_patients(patients: Sequence[str], volumes: Sequence[str]) -> list:
    """ScoredPatient per patient from the rule's volume list (normalised CT, cropped PET, label
    and CT per patient, in the order common.smk's scored_volumes gives them)."""
    from abmseg.study.sampler import ScoredPatient

    if len(volumes) != 4 * len(patients):
        raise ValueError(f"{len(volumes)} volumes for {len(patients)} patients (4 each expected)")
    return [
        ScoredPatient(patient, *map(str, volumes[4 * i : 4 * i + 4]))
        for i, patient in enumerate(patients)
    ]


def _sweep_context(model: str | Path, config: Mapping[str, Any], threads: int):
    from abmseg.infer.networks import load_networks

    networks, device = load_networks(model, threads=threads)
    return (
        networks,
        device,
        InferenceSettings.from_config(config),
        EvaluateSettings.from_config(config),
        NormaliseSettings.from_config(config).suv_ceiling,
    )


def run_sampler_point(
    point_name: str,
    model: str | Path,
    patients: Sequence,
    config: Mapping[str, Any],
    threads: int,
    out: str | Path,
    start_selection: str | Path | None = None,
) -> dict[str, Any]:
    """One point of the sweep over ``patients``, written to ``out`` (JSON)."""
    from abmseg.study.sampler import SamplerPoint, run_point

    point = SamplerPoint.parse(point_name)
    best = None
    if start_selection:
        best = int(read_json(start_selection, keys=("chosen_start_step",))["chosen_start_step"])
    networks, device, base, evaluate, ceiling = _sweep_context(model, config, threads)
    result = run_point(point, patients, networks, device, base, evaluate, ceiling, best)
    write_json(out, result)
    return result


def select_start(
    model: str | Path,
    patients: Sequence,
    config: Mapping[str, Any],
    threads: int,
    out: str | Path,
) -> int:
    """DDIM-10 from each candidate start on training patients; the best mean Dice is chosen."""
    from abmseg.study.sampler import SamplerPoint, choose_start, run_point

    plan = StudyPlan.from_config(config)
    networks, device, base, evaluate, ceiling = _sweep_context(model, config, threads)
    results = {}
    for start in plan.start_candidates:
        point = SamplerPoint("ddim", 10, str(start))
        results[start] = run_point(point, patients, networks, device, base, evaluate, ceiling)
        logger.info(
            "start %d: mean Dice %.4f",
            start,
            float(np.mean([r["dice_mean"] for r in results[start]["patients"]])),
        )
    chosen = choose_start(results)
    write_json(
        out,
        {
            "chosen_start_step": chosen,
            "selected_on": [p.patient_id for p in patients],
            "note": "training patients (seen in training): the choice never reads a test patient",
            "candidates": {str(k): v for k, v in results.items()},
        },
    )
    return chosen


def check_leakage(
    models: Sequence[str | Path],
    test_patients: Sequence[str],
    test_raw: Sequence[str | Path],
    predictions: Sequence[str | Path],
    labels: Sequence[str | Path],
    regions: Mapping[str, int],
    out: str | Path,
) -> dict[str, Any]:
    """Both leakage checks of abmseg.study.leakage, written to ``out`` (JSON)."""
    from abmseg.provenance.lineage import trace_file
    from abmseg.study.leakage import leaks_in_lineage, lineage_summary, shuffled_control

    per_model, leaks = {}, []
    for model in models:
        lineage = trace_file(model).to_dict()
        found = leaks_in_lineage(lineage, test_patients, test_raw)
        leaks += [f"{model}: {line}" for line in found]
        per_model[str(model)] = {**lineage_summary(lineage), "leaks": found}
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
