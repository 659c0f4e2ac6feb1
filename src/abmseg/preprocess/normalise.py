"""The normalise stage: CT (window level/width) and SUV (fixed ceiling) to [-1, 1], the
networks' input range. ``normalise_ct``/``normalise_pet`` are the in-memory cores, shared with
CT-only prediction; ``normalise_patient`` wraps them with files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.settings import from_section


@dataclass(frozen=True)
class NormaliseSettings:
    """config['normalise']."""

    ct_level_hu: float = 100.0
    ct_width_hu: float = 1200.0
    suv_ceiling: float = 10.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NormaliseSettings:
        return from_section(cls, config.get("normalise"), "normalise")


def window_ct(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU in [level - width/2, level + width/2] -> [-1, 1], clipped outside."""
    low = level - width / 2.0
    return np.clip((hu.astype(np.float32) - low) / width * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def scale_suv(suv: np.ndarray, ceiling: float) -> np.ndarray:
    """SUV in [0, ceiling] -> [-1, 1], clipped outside."""
    return np.clip(suv.astype(np.float32) / ceiling * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def normalise_ct(ct: sitk.Image, settings: NormaliseSettings) -> sitk.Image:
    """A CT in HU as the networks see it (float32 in [-1, 1], same grid)."""
    array = sitk.GetArrayViewFromImage(ct)
    return image_like(window_ct(array, settings.ct_level_hu, settings.ct_width_hu), ct)


def normalise_pet(pet: sitk.Image, settings: NormaliseSettings) -> sitk.Image:
    """A PET in SUV as the networks see it (float32 in [-1, 1], same grid)."""
    return image_like(scale_suv(sitk.GetArrayViewFromImage(pet), settings.suv_ceiling), pet)


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
    write_nifti(normalise_ct(ct, settings), out_ct)
    write_nifti(normalise_pet(pet, settings), out_pet)
    write_nifti(sitk.Cast(label, sitk.sitkUInt8), out_label)
