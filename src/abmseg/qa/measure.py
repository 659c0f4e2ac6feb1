"""What a planning CT looks like, in the numbers the QA flags compare with the training CTs.

- HU calibration: the air peak (outside the body) and the fat peak (inside it). A CT whose
  numbers are shifted or scaled (wrong rescale slope or intercept, a phantom-calibrated
  scanner) moves both peaks; the networks saw only CTs whose peaks sat where the training
  CTs' did. Peaks are histogram modes in a window around where air (-1000 HU) and fat (about
  -100 HU) lie. The air window is wide enough that a shift of a few hundred HU stays inside it;
  the fat window is placed relative to the air peak found (nominal air -1000 HU), so a shifted
  CT still finds its fat (and a wrong slope moves fat against air).
- Geometry: slice thickness, in-plane pixel size, scanned length along z.
- Metal: the volume above a metal threshold (streaks and hardware the networks never saw).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.preprocess.roi import body_mask

AIR_WINDOW_HU = (-1200.0, -500.0)
NOMINAL_AIR_HU = -1000.0
# Fat (-150 to -50 HU) on a calibrated CT; the upper end stays below soft tissue (muscle and
# organs, 20-60 HU), which outweighs fat in most pelvic slices.
FAT_WINDOW_HU = (-300.0, 0.0)
PEAK_BIN_HU = 5.0
METAL_HU = 2500.0
# Every n-th slice is enough for the peaks (a histogram of millions of voxels).
PEAK_SLICES = 32


@dataclass(frozen=True)
class CtMeasurements:
    """One CT, as the QA flags see it; a peak is None where its tissue is absent."""

    air_peak_hu: float | None
    fat_peak_hu: float | None
    slice_thickness_mm: float
    pixel_mm: float
    scan_length_mm: float
    metal_ml: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CtMeasurements:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def histogram_peak(values: np.ndarray, window: tuple[float, float]) -> float | None:
    """The mode of ``values`` inside ``window``, or None when fewer than 50 values fall inside
    it: the 5 HU bin with the most values over it and its two neighbours, refined to the
    count-weighted centre of those three bins."""
    values = values[(values >= window[0]) & (values < window[1])]
    if values.size < 50:
        return None
    edges = np.arange(window[0], window[1] + PEAK_BIN_HU, PEAK_BIN_HU)
    counts, _ = np.histogram(values, bins=edges)
    smooth = np.convolve(counts, np.ones(3), mode="same")
    best = int(np.argmax(smooth))
    near = slice(max(best - 1, 0), best + 2)
    centres = edges[:-1][near] + PEAK_BIN_HU / 2
    return float(np.average(centres, weights=counts[near]))


def measure_ct(ct: sitk.Image) -> CtMeasurements:
    """The air and fat peaks, spacing, length and metal volume of a CT in HU (3D image)."""
    hu = sitk.GetArrayViewFromImage(ct)
    step = max(1, hu.shape[0] // PEAK_SLICES)
    sample = np.asarray(hu[::step], dtype=np.float32)
    body, _ = body_mask(sample)
    air = histogram_peak(sample[~body], AIR_WINDOW_HU) if (~body).any() else None
    shift = 0.0 if air is None else air - NOMINAL_AIR_HU
    fat_window = (FAT_WINDOW_HU[0] + shift, FAT_WINDOW_HU[1] + shift)
    fat = histogram_peak(sample[body], fat_window) if body.any() else None
    sx, sy, sz = (float(v) for v in ct.GetSpacing())
    metal_voxels = int(np.count_nonzero(np.asarray(hu) >= METAL_HU))
    return CtMeasurements(
        air_peak_hu=air,
        fat_peak_hu=fat,
        slice_thickness_mm=sz,
        pixel_mm=min(sx, sy),
        scan_length_mm=sz * ct.GetSize()[2],
        metal_ml=metal_voxels * sx * sy * sz / 1000.0,
    )
