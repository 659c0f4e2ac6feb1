"""One patient through the networks: sPET (SUV) and ABM on the cropped grid, and the ABM pasted
back onto the patient's original planning-CT grid (exact geometry, for overlay).

``predict_patient`` is the one core of rule infer (a test patient, from the pipeline's
normalised CT and a trained model), rule predict and ``abmseg predict`` (a CT-only patient, from
a model bundle, through abmseg.infer.ct_only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.errors import PatientDataError
from abmseg.infer.predict import (
    InferenceNetworks,
    InferenceSettings,
    paste_into_ct_grid,
    predict_volume,
)
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import image_like, read_nifti, write_nifti


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


@dataclass(frozen=True)
class PredictionPaths:
    """What one prediction writes (a rule's outputs, or ``abmseg predict``'s --out folder);
    ``summary`` (prediction.json) only for CT-only patients."""

    spet: Path
    abm: Path
    abm_ct: Path
    summary: Path | None = None

    @classmethod
    def in_folder(cls, folder: str | Path) -> PredictionPaths:
        folder = Path(folder)
        names = ("spet.nii.gz", "abm.nii.gz", "abm_ct.nii.gz", "prediction.json")
        return cls(*(folder / name for name in names))


def predict_patient(
    normalised: sitk.Image,
    full_ct: sitk.Image,
    box: dict[str, list[int]],
    predictor: Predictor,
    out: PredictionPaths,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run the networks over the normalised, cropped CT and write sPET (SUV) and ABM on the
    cropped grid and the ABM on the full CT grid; returns the cropped label map."""
    spet, labels = predict_volume(
        sitk.GetArrayFromImage(normalised),
        predictor.networks,
        predictor.settings,
        predictor.device,
        progress,
    )
    full_shape = tuple(reversed(full_ct.GetSize()))
    write_nifti(image_like(spet_to_suv(spet, predictor.suv_ceiling), normalised), out.spet)
    write_nifti(image_like(labels, normalised), out.abm)
    write_nifti(image_like(paste_into_ct_grid(labels, box, full_shape), full_ct), out.abm_ct)
    return labels


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
    labels = predict_patient(ct_image, full_ct, box, predictor, out)
    counts = np.bincount(labels.ravel(), minlength=4)
    return {
        "patient_id": patient,
        "voxels_per_label": {str(k): int(v) for k, v in enumerate(counts)},
    }
