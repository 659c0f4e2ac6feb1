"""Dice and average symmetric surface distance (ASSD, the paper's equation 22) per region.

Empty masks have defined results: Dice is 1.0 when prediction and truth are both empty (perfect
agreement on "nothing here") and 0.0 when exactly one is empty. ASSD is 0.0 when both are empty and
NaN ("undefined: no surface to measure from") when exactly one is; aggregation reports how many
values were undefined instead of inventing a distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2 |P n G| / (|P| + |G|) of two binary masks."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"shapes differ: prediction {p.shape}, truth {g.shape}")
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, g).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one face neighbour outside it (the volume's edge counts
    as outside)."""
    mask = np.asarray(mask, bool)
    eroded = ndimage.binary_erosion(mask, structure=FACE_NEIGHBOURS, border_value=0)
    return mask & ~eroded


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """1/2 (mean_{p in S_P} d(p, S_G) + mean_{g in S_G} d(g, S_P)) in mm, 3D, anisotropic."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"shapes differ: prediction {p.shape}, truth {g.shape}")
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {tuple(spacing)} must give one value per axis of {p.shape}")
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float("nan")
    surface_p, surface_g = surface(p), surface(g)
    to_g = ndimage.distance_transform_edt(~surface_g, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    return 0.5 * (float(to_g[surface_p].mean()) + float(to_p[surface_g].mean()))


def region_scores(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float],
    regions: Mapping[str, int],
) -> dict[str, dict[str, float]]:
    """Dice and ASSD for each named region of two label maps, plus their mean over regions."""
    scores: dict[str, dict[str, float]] = {}
    for name, value in regions.items():
        p, g = pred_labels == value, gt_labels == value
        scores[name] = {"dice": dice(p, g), "assd_mm": assd(p, g, spacing)}
    scores["mean"] = {
        "dice": float(np.mean([scores[n]["dice"] for n in regions])),
        "assd_mm": float(np.nanmean([scores[n]["assd_mm"] for n in regions]))
        if any(np.isfinite(scores[n]["assd_mm"]) for n in regions)
        else float("nan"),
    }
    return scores
