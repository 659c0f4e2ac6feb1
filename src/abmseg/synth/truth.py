"""Score a registration against the synthetic cohort's known PET-CT motion (tests, benchmarks)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def true_pet_to_ct(motion: dict) -> sitk.Euler3DTransform:
    """The generator's motion from truth.json: maps PET-world points to CT-world points."""
    transform = sitk.Euler3DTransform()
    transform.SetComputeZYX(False)
    transform.SetCenter(motion["center"])
    transform.SetRotation(*motion["angles_rad"])
    transform.SetTranslation(motion["translation_mm"])
    return transform


def roi_points(label_path: str | Path) -> list[tuple[float, ...]]:
    """A 3x3x3 lattice of world points spanning the labelled marrow's bounding box."""
    label = sitk.ReadImage(str(label_path))
    voxels = np.argwhere(sitk.GetArrayViewFromImage(label) > 0)
    lo, hi = voxels.min(axis=0), voxels.max(axis=0)
    points = []
    for fractions in itertools.product((0.0, 0.5, 1.0), repeat=3):
        z, y, x = lo + (hi - lo) * np.array(fractions)
        points.append(label.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)]))
    return points


def registration_residual_mm(
    transform_file: str | Path, motion: dict, label_path: str | Path
) -> dict:
    """How far the estimated CT->PET transform is from the inverse of the true motion.

    The estimate maps CT points to PET points and the truth maps PET points back to CT points, so
    their composition is the identity for a perfect registration.
    """
    estimated = sitk.ReadTransform(str(transform_file))
    truth = true_pet_to_ct(motion)
    inverse = truth.GetInverse()
    points = roi_points(label_path)
    residual = [
        float(np.linalg.norm(np.subtract(truth.TransformPoint(estimated.TransformPoint(p)), p)))
        for p in points
    ]
    motion_mm = [float(np.linalg.norm(np.subtract(inverse.TransformPoint(p), p))) for p in points]
    return {
        "residual_max_mm": max(residual),
        "residual_mean_mm": float(np.mean(residual)),
        "motion_max_mm": max(motion_mm),
    }
