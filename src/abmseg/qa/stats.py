"""Per-region statistics of one prediction: what TotalSegmentator's ``--statistics`` gives per
structure, for the three ABM regions, with the uncertainty beside it.

Per region (label value v), on the cropped grid:
- ``abm_volume_ml``: voxels labelled v;
- ``bone_interior_ml``: the CT's bone interior (abmseg.preprocess.bone, CT only) that belongs to
  the region, plus the region's ABM voxels outside it. An interior voxel belongs to the region
  the networks give the highest probability among the regions (background left out), and only
  on the slices the region's ABM spans: the crop holds the whole scan, and bones above or below
  the region (upper lumbar vertebrae, femoral shafts) are not its marrow;
- ``abm_share_of_interior``: the first over the second (0 to 1), roughly the active share of
  the region's marrow. The interior is the filled bone at the synthetic cohort's 3.9 mm pixels
  (cortex included, abmseg.preprocess.bone), so on a CT whose pixels resolve the cortex the share
  comes out low;
- ``mean_hu``, ``mean_spet_suv``, ``mean_entropy``, ``mean_mutual_information``: means over the
  region's ABM voxels (sPET None for a variant without one);
- ``uncertain_share``: the share of the region's ABM voxels whose predictive entropy exceeds the
  configured threshold (QaSettings.uncertain_entropy).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from abmseg.atomic import write_atomic
from abmseg.preprocess.bone import bone_interior

COLUMNS = (
    "patient_id",
    "region",
    "abm_volume_ml",
    "bone_interior_ml",
    "abm_share_of_interior",
    "mean_hu",
    "mean_spet_suv",
    "mean_entropy",
    "mean_mutual_information",
    "uncertain_share",
)


def _mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    return float(values[mask].mean(dtype=np.float64)) if mask.any() else None


def interior_regions(
    hu: np.ndarray, spacing_zyx: Sequence[float], probabilities: np.ndarray
) -> np.ndarray:
    """uint8 map: each bone-interior voxel's most probable region value (1..C-1), 0 elsewhere."""
    interior = bone_interior(hu, spacing_zyx)
    out = np.zeros(hu.shape, dtype=np.uint8)
    if interior.any():
        out[interior] = np.argmax(probabilities[1:, interior], axis=0) + 1
    return out


def region_statistics(
    patient: str,
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: np.ndarray,
    probabilities: np.ndarray,
    spet_suv: np.ndarray | None,
    entropy: np.ndarray,
    mutual_information: np.ndarray,
    regions: Mapping[str, int],
    uncertain_entropy: float,
) -> list[dict[str, Any]]:
    """One row per region (COLUMNS); every array (z, y, x) on one grid, ``probabilities``
    (C, z, y, x) with channel v the class of label value v."""
    shapes = {a.shape for a in (hu, labels, entropy, mutual_information)}
    if len(shapes) != 1 or probabilities.shape[1:] != hu.shape:
        raise ValueError(f"{patient}: the maps of one prediction must share one grid")
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    interior = interior_regions(hu, spacing_zyx, probabilities)
    rows = []
    for name, value in regions.items():
        abm = labels == value
        marrow = abm | ((interior == value) & _slices_of(abm))
        abm_ml = float(abm.sum()) * voxel_ml
        marrow_ml = float(marrow.sum()) * voxel_ml
        rows.append(
            {
                "patient_id": patient,
                "region": name,
                "abm_volume_ml": abm_ml,
                "bone_interior_ml": marrow_ml,
                "abm_share_of_interior": abm_ml / marrow_ml if marrow_ml > 0 else None,
                "mean_hu": _mean(hu, abm),
                "mean_spet_suv": None if spet_suv is None else _mean(spet_suv, abm),
                "mean_entropy": _mean(entropy, abm),
                "mean_mutual_information": _mean(mutual_information, abm),
                "uncertain_share": _mean(entropy > uncertain_entropy, abm),
            }
        )
    return rows


def _slices_of(mask: np.ndarray) -> np.ndarray:
    """(z, 1, 1) bool: the slices from the first to the last that ``mask`` touches."""
    touched = mask.any(axis=(1, 2))
    span = np.zeros(mask.shape[0], dtype=bool)
    if touched.any():
        hit = np.flatnonzero(touched)
        span[hit[0] : hit[-1] + 1] = True
    return span[:, None, None]


def marrow_mean_entropy(labels: np.ndarray, entropy: np.ndarray) -> float | None:
    """Mean predictive entropy over all predicted marrow: the QA's patient-level uncertainty."""
    return _mean(entropy, labels > 0)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def stats_tsv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as a tab-separated table (empty cell for None), header first."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return out.getvalue()


def write_stats_tsv(path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``stats_tsv`` written atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(stats_tsv(rows)))
