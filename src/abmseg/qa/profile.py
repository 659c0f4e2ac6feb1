"""What the networks were trained on, in the numbers the QA flags need: the range of every CT
measurement and of every region's ABM volume over the training patients.

Written once per run (rule ``training_profile``, results/qa/training_profile.json) from the
training patients only, and copied into every model bundle, so a CT-only patient is judged
against the training set of the networks that predict it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.io.volume import read_nifti
from abmseg.qa.measure import CtMeasurements, measure_ct

PROFILE_VERSION = 1


def value_range(values: Sequence[float | None]) -> dict[str, float] | None:
    """min, median and max of the values that exist; None when none does."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "min": float(np.min(present)),
        "median": float(np.median(present)),
        "max": float(np.max(present)),
    }


def region_volumes_ml(label: np.ndarray, spacing_xyz: Sequence[float], regions: Mapping[str, int]):
    """{region: volume in ml} of a label map (z, y, x)."""
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    counts = np.bincount(np.asarray(label).ravel(), minlength=max(regions.values()) + 1)
    return {name: float(counts[value]) * voxel_ml for name, value in regions.items()}


@dataclass(frozen=True)
class TrainingProfile:
    """Ranges ({"min", "median", "max"}) of the CT measurements and the region volumes."""

    patients: int
    ct: dict[str, dict[str, float] | None]
    region_volume_ml: dict[str, dict[str, float] | None]
    # share of the training labels on the scan's first or last slice (None: not measured)
    label_at_edge: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "patients": self.patients,
            "ct": self.ct,
            "region_volume_ml": self.region_volume_ml,
            "label_at_edge": self.label_at_edge,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingProfile:
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"training profile version {data.get('version')!r} is not 1")
        return cls(
            int(data["patients"]),
            dict(data["ct"]),
            dict(data["region_volume_ml"]),
            data.get("label_at_edge"),
        )


def at_scan_edge(label: np.ndarray) -> bool:
    """Whether a label map (z, y, x) on a scan's grid has a region on its first or last slice."""
    label = np.asarray(label)
    return bool(label[0].any() or label[-1].any())


def summarise(
    measurements: Sequence[CtMeasurements],
    volumes: Sequence[Mapping[str, float]],
    regions: Mapping[str, int],
    at_edge: Sequence[bool] | None = None,
) -> TrainingProfile:
    """The profile of the training patients' measurements and label volumes (and whether each
    label reached the scan's first or last slice)."""
    if not measurements:
        raise ValueError("a training profile needs at least one training patient")
    fields = CtMeasurements.__dataclass_fields__
    ct = {key: value_range([getattr(m, key) for m in measurements]) for key in fields}
    region = {name: value_range([v[name] for v in volumes]) for name in regions}
    edge = None if at_edge is None else float(np.mean(at_edge))
    return TrainingProfile(len(measurements), ct, region, edge)


def build_profile(
    patients: Sequence[str],
    converted_cts: Sequence[str | Path],
    labels: Sequence[str | Path],
    regions: Mapping[str, int],
) -> TrainingProfile:
    """Measure each training patient's converted CT (HU) and label, both on the CT's grid."""
    measurements, volumes, edges = [], [], []
    for patient, ct_path, label_path in zip(patients, converted_cts, labels, strict=True):
        measurements.append(measure_ct(read_nifti(ct_path, patient, made_by="convert")))
        label = read_nifti(label_path, patient, made_by="convert")
        array = sitk.GetArrayViewFromImage(label)
        volumes.append(region_volumes_ml(array, label.GetSpacing(), regions))
        edges.append(at_scan_edge(array))
    return summarise(measurements, volumes, regions, edges)
