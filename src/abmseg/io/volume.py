"""Volumes with explicit world geometry, and NIfTI read/write through SimpleITK.

Arrays are numpy in (z, y, x) order; geometry is ITK/DICOM LPS world space (mm): ``origin`` is the
centre of voxel (0, 0, 0), ``spacing`` is (x, y, z) and ``direction`` the 3x3 matrix whose columns
are the world directions of the x, y and z index axes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
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


def _nifti_shortfall(path: Path) -> str | None:
    """Why a NIfTI file is incomplete (truncated, broken gzip stream), or None when it is whole.

    SimpleITK reads a truncated ``.nii.gz`` without complaint (the missing voxels come back as
    whatever the buffer held), so a file cut short by a full disk or a copy that was killed would
    pass as a volume. This decompresses the stream to its end (gzip checks its CRC and length) and
    compares the byte count with what the header's dimensions and voxel size need. Only NIfTI-1 and
    NIfTI-2 single files are checked; anything else is left to SimpleITK.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")) or not path.is_file():
        return None
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                header = handle.read(_HEADER_BYTES)
                total = len(header)
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
        else:
            with open(path, "rb") as handle:
                header = handle.read(_HEADER_BYTES)
            total = path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        return f"the file is truncated or corrupt ({exc or type(exc).__name__})"
    needed = _nifti_bytes_needed(header)
    if needed is not None and total < needed:
        return f"the file is truncated: {total} of the {needed} bytes its header announces"
    return None


_HEADER_BYTES = 540  # NIfTI-2 header size (NIfTI-1 is 348)


def _nifti_bytes_needed(header: bytes) -> int | None:
    """vox_offset + voxel data size from a NIfTI-1/2 header, or None when it is not one."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = int(struct.unpack(f"{order}f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            dims = struct.unpack(f"{order}8q", header[16:80])
            offset = struct.unpack(f"{order}q", header[168:176])[0]
            break
    else:
        return None
    rank = dims[0]
    if not 1 <= rank <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1 : rank + 1]):
        return None
    return offset + math.prod(dims[1 : rank + 1]) * bitpix // 8


def read_nifti(
    path: str | Path, patient: str | None = None, made_by: str | None = None
) -> sitk.Image:
    """Read a NIfTI, turning a library failure or a truncated file into an error that names the
    file and the rule that makes it (``made_by``)."""
    path = Path(path)
    remake = (
        f"delete it and rerun the rule '{made_by}' that makes it"
        if made_by
        else "replace it with a valid NIfTI file"
    )
    shortfall = _nifti_shortfall(path)
    if shortfall:
        raise PatientDataError(patient, path, shortfall, remake)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise PatientDataError(
            patient, path, f"cannot read this NIfTI file ({first_line[:200]})", remake
        ) from None
