"""Volumes with explicit world geometry, and NIfTI read/write through SimpleITK.

Arrays are numpy in (z, y, x) order; geometry is ITK/DICOM LPS world space (mm): ``origin`` is the
centre of voxel (0, 0, 0), ``spacing`` is (x, y, z) and ``direction`` the 3x3 matrix whose columns
are the world directions of the x, y and z index axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import atomic_path
from abmseg.errors import PatientDataError


@dataclass(frozen=True)
class Geometry:
    """World placement of a voxel grid (ITK conventions, LPS mm)."""

    size: tuple[int, int, int]  # (x, y, z)
    spacing: tuple[float, float, float]  # (x, y, z)
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major 3x3, columns = axis directions

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def matches(self, other: Geometry, tol_mm: float = 1e-3) -> bool:
        """Same grid in world space (within ``tol_mm`` for positions, 1e-5 for directions)."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tol_mm)
            and np.allclose(self.origin, other.origin, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def as_dict(self) -> dict:
        return {
            "size_xyz": list(self.size),
            "spacing_xyz_mm": [round(v, 6) for v in self.spacing],
            "origin_lps_mm": [round(v, 4) for v in self.origin],
            "direction": [round(v, 8) for v in self.direction],
        }


def image_from_array(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Wrap a (z, y, x) array as a SimpleITK image placed on ``geometry``."""
    image = sitk.GetImageFromArray(array)
    return geometry.apply_to(image)


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image on exactly the reference image's grid."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def write_nifti(image: sitk.Image, path: str | Path) -> None:
    """Write a compressed NIfTI atomically (the file appears only when complete)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def read_nifti(
    path: str | Path, patient: str | None = None, made_by: str | None = None
) -> sitk.Image:
    """Read a NIfTI, turning a library failure into an error that names the file and its maker."""
    path = Path(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        remake = (
            f"delete it and rerun the rule '{made_by}' that makes it"
            if made_by
            else ("replace it with a valid NIfTI file")
        )
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise PatientDataError(
            patient, path, f"cannot read this NIfTI file ({first_line[:200]})", remake
        ) from None
