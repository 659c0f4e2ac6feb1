"""The phantom's CT-visible ceiling as a method of the study: its Bayes-optimal CT-only ABM
probability (``ceiling_prob.nii.gz``, written by ``abmseg synth``) at 0.5, inside the phantom's
true marrow with the marrow's own regions, cut to the patient's cropped grid.

No CT-only method can beat it in expectation (docs/phantom.md), so a trained model scoring well
above it has seen something it should not have: the study's leakage alarm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.preprocess.roi import crop_image

CEILING_FILE = "ceiling_prob.nii.gz"
MARROW_FILE = "marrow.nii.gz"


def truth_files(label_path: str | Path, patient: str) -> tuple[Path, Path]:
    """The phantom's ceiling probability and marrow map, beside the patient's label file."""
    folder = Path(label_path).parent
    paths = (folder / CEILING_FILE, folder / MARROW_FILE)
    for path in paths:
        if not path.is_file():
            raise PatientDataError(
                patient,
                path,
                "the study's ceiling needs the phantom's truth files beside the label",
                "run the study on a cohort made by `abmseg synth` (make study), or drop "
                "'ceiling' from config study.references",
            )
    return paths


def ceiling_labels(
    probability: np.ndarray, marrow: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Label map: the marrow region's value where the ceiling probability reaches ``threshold``."""
    hit = (probability >= threshold) & (marrow > 0)
    return np.where(hit, marrow, 0).astype(np.uint8)


def ceiling_on_cropped_grid(
    patient: str, label_path: str | Path, box: dict[str, list[int]], cropped_label: sitk.Image
) -> sitk.Image:
    """The ceiling's label map cut with the crop's box, on the cropped label's grid."""
    ceiling_path, marrow_path = truth_files(label_path, patient)
    probability = crop_image(read_nifti(ceiling_path, patient), box)
    marrow = crop_image(read_nifti(marrow_path, patient), box)
    arrays = [sitk.GetArrayFromImage(image) for image in (probability, marrow)]
    expected = sitk.GetArrayFromImage(cropped_label).shape
    if any(array.shape != expected for array in arrays):
        raise PatientDataError(
            patient,
            ceiling_path,
            f"the phantom's truth files cut to the crop box are {arrays[0].shape}, the cropped "
            f"label {expected}: they are not on the planning CT's grid",
            "regenerate the cohort with `abmseg synth`",
        )
    return image_like(ceiling_labels(arrays[0], arrays[1].astype(np.uint8)), cropped_label)


def write_ceiling(
    patient: str,
    label_path: str | Path,
    roi_json: str | Path,
    cropped_label_path: str | Path,
    out: str | Path,
) -> None:
    """Rule ceiling: the ceiling's label map on the patient's cropped grid, written to ``out``."""
    box = read_json(roi_json, patient, made_by="crop", keys=("box_ct_index",))["box_ct_index"]
    cropped_label = read_nifti(cropped_label_path, patient, made_by="crop")
    write_nifti(ceiling_on_cropped_grid(patient, label_path, box, cropped_label), out)
