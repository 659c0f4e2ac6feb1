"""One test patient's inference outputs: sPET (SUV) and ABM on the cropped grid, and the ABM
pasted back onto the patient's original planning-CT grid (exact geometry, for overlay)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.infer.predict import InferenceSettings, Networks, paste_into_ct_grid, predict_volume
from abmseg.io.volume import image_like, read_nifti, write_nifti


def spet_to_suv(spet: np.ndarray, suv_ceiling: float) -> np.ndarray:
    """Inverse of the SUV normalisation: [-1, 1] -> [0, ceiling]."""
    return ((spet.astype(np.float32) + 1.0) / 2.0 * suv_ceiling).astype(np.float32)


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
    box = json.loads(Path(roi_json).read_text())["box_ct_index"]
    spet, labels = predict_volume(sitk.GetArrayFromImage(ct_image), networks, settings, device)

    full_shape = tuple(reversed(full_ct.GetSize()))
    write_nifti(image_like(spet_to_suv(spet, suv_ceiling), ct_image), out_spet)
    write_nifti(image_like(labels, ct_image), out_abm)
    write_nifti(image_like(paste_into_ct_grid(labels, box, full_shape), full_ct), out_abm_ct)
    counts = np.bincount(labels.ravel(), minlength=4)
    return {
        "patient_id": patient,
        "voxels_per_label": {str(k): int(v) for k, v in enumerate(counts)},
    }
