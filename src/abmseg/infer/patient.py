"""One patient through the networks: sPET (SUV) and ABM on the cropped grid, and the ABM pasted
back onto the patient's original planning-CT grid (exact geometry, for overlay).

``predict_patient`` is the one core of rule infer (a test patient, from the pipeline's
normalised CT and a trained model), rule predict and ``abmseg predict`` (a CT-only patient, from
a model bundle, through abmseg.infer.ct_only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.errors import PatientDataError
from abmseg.infer.predict import (
    InferenceNetworks,
    InferenceSettings,
    box_slices,
    paste_into_ct_grid,
    predict_ensemble,
)
from abmseg.io.channels import write_channels
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.preprocess.convert import ConvertSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import AssessmentPaths, PredictionMaps, assess_prediction
from abmseg.qa.profile import TrainingProfile
from abmseg.regions import DEFAULT_REGIONS


def spet_to_suv(spet: np.ndarray, suv_ceiling: float) -> np.ndarray:
    """Inverse of the SUV normalisation: [-1, 1] -> [0, ceiling]."""
    return ((spet.astype(np.float32) + 1.0) / 2.0 * suv_ceiling).astype(np.float32)


def read_roi_box(roi_json: str | Path, patient: str) -> dict[str, list[int]]:
    """The crop box (CT index ranges) from the crop rule's roi.json."""
    box = read_json(roi_json, patient, made_by="crop", keys=("box_ct_index",))["box_ct_index"]
    if not isinstance(box, dict) or any(
        not isinstance(box.get(axis), list) or len(box[axis]) != 2 for axis in "xyz"
    ):
        raise PatientDataError(
            patient,
            roi_json,
            f"box_ct_index is not an x/y/z box of [start, stop] pairs: {box!r}"[:300],
            "delete it and rerun the rule 'crop' that makes it",
        )
    return box


@dataclass(frozen=True)
class Predictor:
    """Trained networks on their device with the settings they predict with."""

    networks: InferenceNetworks
    device: torch.device
    settings: InferenceSettings
    suv_ceiling: float  # the normalisation's: sPET in [-1, 1] back to SUV
    regions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    qa: QaSettings = QaSettings()
    profile: TrainingProfile | None = None  # the training data's ranges (QA flags)

    @classmethod
    def from_config(
        cls,
        networks: InferenceNetworks,
        device: torch.device,
        config: Mapping[str, Any],
        profile: TrainingProfile | None,
    ) -> Predictor:
        """The settings rule infer, ``abmseg infer`` and a model bundle predict with, read from a
        (stage) config: the sampler and ensemble, the SUV ceiling, the regions and the QA."""
        return cls(
            networks,
            device,
            InferenceSettings.from_config(config),
            NormaliseSettings.from_config(config).suv_ceiling,
            regions=dict(ConvertSettings.from_config(config).regions),
            qa=QaSettings.from_config(config),
            profile=profile,
        )


OUTPUT_NAMES = {
    "spet": "spet.nii.gz",
    "abm": "abm.nii.gz",
    "abm_ct": "abm_ct.nii.gz",
    "prob": "abm_prob.nii.gz",
    "uncertainty": "abm_uncertainty.nii.gz",
    "stats": "abm_stats.tsv",
    "stats_json": "abm_stats.json",
    "qa": "qa.json",
    "qa_png": "qa.png",
}


@dataclass(frozen=True)
class PredictionPaths:
    """What one prediction writes (a rule's outputs, or ``abmseg predict``'s --out folder);
    ``summary`` (prediction.json) only for CT-only patients."""

    spet: Path
    abm: Path
    abm_ct: Path
    prob: Path
    uncertainty: Path
    stats: Path
    stats_json: Path
    qa: Path
    qa_png: Path
    summary: Path | None = None

    @classmethod
    def in_folder(cls, folder: str | Path, summary: bool = True) -> PredictionPaths:
        folder = Path(folder)
        paths = {key: folder / name for key, name in OUTPUT_NAMES.items()}
        return cls(**paths, summary=folder / "prediction.json" if summary else None)

    @classmethod
    def of_rule(cls, output: Any) -> PredictionPaths:
        """A rule's named outputs (snakemake.output), which carry these names."""
        paths = {key: Path(getattr(output, key)) for key in OUTPUT_NAMES}
        summary = getattr(output, "summary", None)
        return cls(**paths, summary=None if summary is None else Path(summary))

    @property
    def assessment(self) -> AssessmentPaths:
        return AssessmentPaths(self.stats, self.stats_json, self.qa, self.qa_png)


def paste_channels(
    channels: np.ndarray, box: Mapping[str, list[int]], ct_shape_zyx: tuple[int, ...], fill: float
) -> np.ndarray:
    """(C, z, y, x) maps of the cropped grid on the full CT grid: channel 0 is ``fill`` outside
    the box (certain background for probabilities), the others 0."""
    full = np.zeros((channels.shape[0], *ct_shape_zyx), dtype=np.float32)
    full[0] = fill
    full[(slice(None), *box_slices(box, channels.shape[1:]))] = channels
    return full


def predict_patient(
    patient: str,
    normalised: sitk.Image,
    full_ct: sitk.Image,
    box: dict[str, list[int]],
    predictor: Predictor,
    out: PredictionPaths,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the networks over the normalised, cropped CT (``inference.samples`` seeds, mirrored
    too with ``inference.tta``) and write: sPET (SUV) and ABM on the cropped grid; the ABM, the
    mean class probabilities and the uncertainty maps on the full CT grid; the statistics, QA
    record and QA picture. Returns the cropped label map and the QA record."""
    settings = predictor.settings
    spet, summary = predict_ensemble(
        sitk.GetArrayFromImage(normalised),
        predictor.networks,
        settings,
        predictor.device,
        samples=settings.samples,
        mirror=settings.tta,
        on_batch=progress,
    )
    labels = summary.labels
    # the slices' resize back to the crop can overshoot 1 by a float32 rounding step
    np.clip(summary.mean, 0.0, 1.0, out=summary.mean)
    full_shape = tuple(reversed(full_ct.GetSize()))
    spet_suv = spet_to_suv(spet, predictor.suv_ceiling)
    write_nifti(image_like(spet_suv, normalised), out.spet)
    write_nifti(image_like(labels, normalised), out.abm)
    write_nifti(image_like(paste_into_ct_grid(labels, box, full_shape), full_ct), out.abm_ct)
    write_channels(paste_channels(summary.mean, box, full_shape, 1.0), full_ct, out.prob)
    uncertainty = np.stack([summary.predictive_entropy, summary.mutual_information])
    write_channels(paste_channels(uncertainty, box, full_shape, 0.0), full_ct, out.uncertainty)
    maps = PredictionMaps(
        labels,
        summary.mean,
        summary.predictive_entropy,
        summary.mutual_information,
        spet_suv if predictor.networks.g_ct2pet is not None else None,
        summary.passes,
    )
    qa = assess_prediction(
        patient,
        full_ct,
        box,
        maps,
        predictor.regions,
        predictor.qa,
        predictor.profile,
        out.assessment,
    )
    return labels, qa


def infer_patient(
    patient: str,
    normalized_ct: str | Path,
    converted_ct: str | Path,
    roi_json: str | Path,
    predictor: Predictor,
    out: PredictionPaths,
) -> dict:
    """Rule infer: a test patient from the pipeline's files; returns the label counts."""
    box = read_roi_box(roi_json, patient)
    ct_image = read_nifti(normalized_ct, patient, made_by="normalise")
    full_ct = read_nifti(converted_ct, patient, made_by="convert")
    labels, qa = predict_patient(patient, ct_image, full_ct, box, predictor, out)
    counts = np.bincount(labels.ravel(), minlength=4)
    return {
        "patient_id": patient,
        "voxels_per_label": {str(k): int(v) for k, v in enumerate(counts)},
        "qa_verdict": qa["verdict"],
    }
