"""Map CT (window level/width) and SUV (fixed ceiling) to [-1, 1], the networks' input range."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.io.volume import image_like, read_nifti, write_nifti


@dataclass(frozen=True)
class NormaliseSettings:
    ct_level_hu: float = 100.0
    ct_width_hu: float = 1200.0
    suv_ceiling: float = 10.0


def window_ct(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU in [level - width/2, level + width/2] -> [-1, 1], clipped outside."""
    low = level - width / 2.0
    return np.clip((hu.astype(np.float32) - low) / width * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def scale_suv(suv: np.ndarray, ceiling: float) -> np.ndarray:
    """SUV in [0, ceiling] -> [-1, 1], clipped outside."""
    return np.clip(suv.astype(np.float32) / ceiling * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def normalise_patient(
    ct_path: str | Path,
    pet_path: str | Path,
    label_path: str | Path,
    out_ct: str | Path,
    out_pet: str | Path,
    out_label: str | Path,
    settings: NormaliseSettings,
    patient: str | None = None,
) -> None:
    """Write the model-ready CT and PET in [-1, 1] and the integer label, on the cropped grid."""
    ct = read_nifti(ct_path, patient, made_by="crop")
    pet = read_nifti(pet_path, patient, made_by="crop")
    label = read_nifti(label_path, patient, made_by="crop")
    ct_norm = window_ct(sitk.GetArrayViewFromImage(ct), settings.ct_level_hu, settings.ct_width_hu)
    pet_norm = scale_suv(sitk.GetArrayViewFromImage(pet), settings.suv_ceiling)
    write_nifti(image_like(ct_norm, ct), out_ct)
    write_nifti(image_like(pet_norm, pet), out_pet)
    write_nifti(sitk.Cast(label, sitk.sitkUInt8), out_label)
