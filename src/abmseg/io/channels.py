"""Several maps of one 3D grid in one NIfTI file: the channels go on a fourth axis.

``abm_prob.nii.gz`` (class probabilities) and ``abm_uncertainty.nii.gz`` (uncertainty maps) are
written this way: x, y, z as the grid they belong to (the planning CT), channel as the fourth
axis with spacing 1 and origin 0 (what SimpleITK's JoinSeries makes, and what 3D Slicer, ITK-SNAP
and nibabel read as a 4D volume). Arrays are (channel, z, y, x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.io.volume import image_like, read_nifti, write_nifti


def channels_image(channels: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """(C, z, y, x) array -> 4D image whose first three axes are ``reference``'s grid."""
    channels = np.asarray(channels)
    expected = tuple(reversed(reference.GetSize()))
    if channels.ndim != 4 or channels.shape[1:] != expected:
        raise ValueError(f"channels of shape {channels.shape} do not lie on a grid of {expected}")
    return sitk.JoinSeries([image_like(np.ascontiguousarray(c), reference) for c in channels])


def write_channels(channels: np.ndarray, reference: sitk.Image, path: str | Path) -> None:
    """Write ``channels`` (C, z, y, x) on ``reference``'s grid as one compressed 4D NIfTI."""
    write_nifti(channels_image(channels, reference), path)


def read_channels(
    path: str | Path, patient: str | None = None, made_by: str | None = None
) -> tuple[np.ndarray, sitk.Image]:
    """Inverse of :func:`write_channels`: the (C, z, y, x) array and an empty 3D image on the
    grid of the first three axes (for geometry only)."""
    image = read_nifti(path, patient, made_by)
    if image.GetDimension() != 4:
        raise PatientDataError(
            patient,
            path,
            f"expected a 4D NIfTI (maps on a fourth axis), found {image.GetDimension()}D",
            f"delete it and rerun the rule '{made_by}' that makes it"
            if made_by
            else "pass the 4D file abmseg wrote",
        )
    size = list(image.GetSize())
    grid = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    return sitk.GetArrayFromImage(image), grid
