"""DICOM series to images: CT to HU, PET to SUVbw, each on its own grid (no files written).

The convert stage (abmseg.preprocess.convert) adds the label and writes the NIfTI files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import DicomSeries, read_series, rescaled_pixels, uid_digest
from abmseg.io.suv import suv_scale
from abmseg.io.volume import image_from_array


def series_meta(series: DicomSeries) -> dict:
    first = series.datasets[0]
    return {
        "modality": series.modality,
        "n_slices": len(series.datasets),
        "series_uid_sha256_16": uid_digest(str(first.get("SeriesInstanceUID", ""))),
        "frame_of_reference_sha256_16": uid_digest(str(first.get("FrameOfReferenceUID", ""))),
        "manufacturer": str(first.get("Manufacturer", "")),
        "geometry": series.geometry.as_dict(),
    }


def convert_ct(ct_dir: str | Path, patient: str) -> tuple[sitk.Image, dict]:
    """CT series -> HU image (int16 when the rescale gives whole HU, else float32)."""
    series = read_series(ct_dir, "CT", patient)
    return ct_image(series, patient), series_meta(series)


def ct_image(series: DicomSeries, patient: str) -> sitk.Image:
    """The HU image of a CT series already read (int16 when the rescale gives whole HU)."""
    hu = rescaled_pixels(series, patient)
    integral = np.all(np.mod(hu, 1) == 0) and hu.min() >= -32768 and hu.max() <= 32767
    array = hu.astype(np.int16) if integral else hu
    return image_from_array(array, series.geometry)


def convert_pet(pet_dir: str | Path, patient: str) -> tuple[sitk.Image, dict]:
    """PET series -> SUVbw image (float32) on the PET's own grid."""
    series = read_series(pet_dir, "PT", patient)
    scale = suv_scale(series.datasets, patient, series.paths[0], series.paths)
    suv = rescaled_pixels(series, patient) * np.float32(scale.factor)
    if not np.all(np.isfinite(suv)):
        raise PatientDataError(
            patient,
            pet_dir,
            f"SUV values are not finite (SUV factor {scale.factor:g} from {scale.method})",
            "check the PET's weight, dose and rescale tags against the scanner's dose report",
        )
    meta = series_meta(series)
    meta["suv"] = scale.as_dict()
    meta["suv_max"] = float(suv.max())
    return image_from_array(suv.astype(np.float32), series.geometry), meta


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM Part 10 file (the 'DICM' marker after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False
