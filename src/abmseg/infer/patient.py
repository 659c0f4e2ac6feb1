"""One test patient's inference outputs: sPET (SUV) and ABM on the cropped grid, and the ABM
pasted back onto the patient's original planning-CT grid (exact geometry, for overlay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.errors import PatientDataError
from abmseg.infer.predict import InferenceSettings, Networks, paste_into_ct_grid, predict_volume
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


def infer_patient(
    patient: str,
    normalized_ct: str | Path,
    converted_ct: str | Path,
    roi_json: str | Path,
    networks: Networks,
    settings: InferenceSettings,
    suv_ceiling: float,
    out_spet: str | Path,
    out_abm: str | Path,
    out_abm_ct: str | Path,
    device: torch.device,
) -> dict:
    """Predict and write spet.nii.gz (SUV), abm.nii.gz and abm_ct.nii.gz; return label counts."""
    ct_image = read_nifti(normalized_ct, patient, made_by="normalise")
    full_ct = read_nifti(converted_ct, patient, made_by="convert")
    box = read_roi_box(roi_json, patient)
    spet, labels = predict_volume(sitk.GetArrayFromImage(ct_image), networks, settings, device)
    write_prediction(
        spet, labels, ct_image, full_ct, box, suv_ceiling, out_spet, out_abm, out_abm_ct
    )
    counts = np.bincount(labels.ravel(), minlength=4)
    return {
        "patient_id": patient,
        "voxels_per_label": {str(k): int(v) for k, v in enumerate(counts)},
    }


def write_prediction(
    spet: np.ndarray,
    labels: np.ndarray,
    cropped: sitk.Image,
    full_ct: sitk.Image,
    box: dict[str, list[int]],
    suv_ceiling: float,
    out_spet: str | Path,
    out_abm: str | Path,
    out_abm_ct: str | Path,
) -> None:
    """sPET (SUV) and ABM on the cropped grid, and the ABM pasted back onto the full CT grid:
    the same three files for a test patient (rule infer) and a CT-only patient (predict)."""
    full_shape = tuple(reversed(full_ct.GetSize()))
    write_nifti(image_like(spet_to_suv(spet, suv_ceiling), cropped), out_spet)
    write_nifti(image_like(labels, cropped), out_abm)
    write_nifti(image_like(paste_into_ct_grid(labels, box, full_shape), full_ct), out_abm_ct)
