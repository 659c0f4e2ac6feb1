"""Axis-aligned voxel grids in DICOM patient (LPS) world space.

Arrays are numpy (z, y, x); ``size``/``spacing``/``origin`` are (x, y, z) as in SimpleITK, and the
origin is the centre of voxel (0, 0, 0). Keeping one small type for this avoids every module
re-deriving world coordinates (and getting the axis order wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """An axis-aligned (identity direction) grid of voxel centres."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """numpy array shape (z, y, x)."""
        return (self.size[2], self.size[1], self.size[0])

    def axis(self, i: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along axis ``i`` (0=x, 1=y, 2=z)."""
        return self.origin[i] + self.spacing[i] * np.arange(self.size[i], dtype=np.float64)

    def block(
        self, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[tuple[slice, slice, slice], list[np.ndarray]] | None:
        """Index slices (z, y, x) covering the world box [lo, hi] and its broadcastable coords.

        Returns None when the box misses the grid, so shapes outside the field are free.
        """
        slices = []
        coords = []
        for i in (2, 1, 0):
            start = int(np.ceil((lo[i] - self.origin[i]) / self.spacing[i] - 1e-9))
            stop = int(np.floor((hi[i] - self.origin[i]) / self.spacing[i] + 1e-9)) + 1
            start, stop = max(start, 0), min(stop, self.size[i])
            if start >= stop:
                return None
            slices.append(slice(start, stop))
            coords.append(self.origin[i] + self.spacing[i] * np.arange(start, stop))
        z, y, x = coords
        return (
            (slices[0], slices[1], slices[2]),
            [x[None, None, :], y[None, :, None], z[:, None, None]],
        )

    def z_crop(self, start: int, count: int) -> Grid:
        """The sub-grid of ``count`` slices starting at slice ``start``."""
        origin = (self.origin[0], self.origin[1], self.origin[2] + start * self.spacing[2])
        return Grid((self.size[0], self.size[1], count), self.spacing, origin)

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array as a SimpleITK image on this grid."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return img

    def as_dict(self) -> dict:
        return {
            "size_xyz": list(self.size),
            "spacing_xyz_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        }


def centred_grid(
    matrix: int,
    pixel_mm: float,
    slices: int,
    slice_mm: float,
    centre_xy: tuple[float, float],
    z0: float,
) -> Grid:
    """A square ``matrix`` grid centred on ``centre_xy`` whose first slice lies at ``z0``."""
    half = (matrix - 1) / 2.0 * pixel_mm
    return Grid(
        size=(matrix, matrix, slices),
        spacing=(pixel_mm, pixel_mm, slice_mm),
        origin=(centre_xy[0] - half, centre_xy[1] - half, float(z0)),
    )
