"""Trivial ABM baselines on a synthetic cohort's marrow voxels: Dice, thresholds, a logistic fit.

They tell how hard the phantom is: if a CT threshold or a position model inside the true marrow
already finds the ABM, a network learns nothing worth reporting. Everything here works on 1-D
arrays over one patient's marrow voxels (numpy only, no scikit-learn), so a cohort of full-size
patients fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

REGIONS = (1, 2, 3)  # label values of the ABM regions (spine, ilium, lower pelvis)
N_POSITION = 4  # x, y, z in [0, 1] over the marrow box, and |x - marrow centre x|


def dice_from_counts(intersection: int, n_truth: int, n_pred: int) -> float:
    """Dice from voxel counts; two empty masks agree perfectly (1.0), one empty one does not."""
    total = n_truth + n_pred
    return 1.0 if total == 0 else 2.0 * intersection / total


def region_dice(
    pred: np.ndarray, region: np.ndarray, label: np.ndarray, truth_counts: Sequence[int]
) -> np.ndarray:
    """Dice per region of a prediction made inside the marrow.

    ``pred`` (bool), ``region`` (the marrow's region) and ``label`` (the ABM label's value) are
    over the marrow voxels; ``truth_counts[i]`` is the whole volume's voxel count of label
    ``REGIONS[i]``, so label voxels outside the marrow still count as missed.
    """
    out = np.empty(len(REGIONS))
    for i, r in enumerate(REGIONS):
        predicted = pred & (region == r)
        hit = int(np.count_nonzero(predicted & (label == r)))
        out[i] = dice_from_counts(hit, int(truth_counts[i]), int(np.count_nonzero(predicted)))
    return out


def threshold_dice(
    score: np.ndarray,
    region: np.ndarray,
    label: np.ndarray,
    truth_counts: Sequence[int],
    thresholds: np.ndarray,
) -> np.ndarray:
    """Dice per region (columns) of ``score >= t`` for every ``t`` of ``thresholds`` (rows).

    Sorted scores and binary search: one patient costs O(n log n), not O(n x thresholds).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    out = np.empty((len(thresholds), len(REGIONS)))
    for i, r in enumerate(REGIONS):
        in_region = region == r
        scores = np.sort(score[in_region])
        hits = np.sort(score[in_region & (label == r)])
        n_pred = len(scores) - np.searchsorted(scores, thresholds, side="left")
        n_hit = len(hits) - np.searchsorted(hits, thresholds, side="left")
        total = n_pred + int(truth_counts[i])
        safe = np.maximum(total, 1)
        out[:, i] = np.where(total == 0, 1.0, 2.0 * n_hit / safe)
    return out


def quantile_candidates(
    values: np.ndarray, n: int = 41, lo: float = 0.05, hi: float = 0.95
) -> np.ndarray:
    """``n`` candidate thresholds: quantiles ``lo``..``hi`` of the pooled values (unique)."""
    return np.unique(np.quantile(values, np.linspace(lo, hi, n)))


def tune_threshold(curves: Sequence[np.ndarray], thresholds: np.ndarray) -> tuple[float, float]:
    """The threshold whose cohort mean Dice (mean over regions, then patients) is highest.

    ``curves`` are :func:`threshold_dice` results of the patients for ``thresholds``; ties go to
    the lowest threshold. Returns (threshold, that mean Dice).
    """
    mean = np.mean([c.mean(axis=1) for c in curves], axis=0)
    best = int(np.argmax(mean))
    return float(thresholds[best]), float(mean[best])


def smoothed_inside(values: np.ndarray, mask: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Normalised convolution G*(v m) / G*(m) at the ``mask`` voxels (1-D, in C order).

    Only masked voxels are averaged, so cortex next to the marrow does not bleed into it. The
    work is done on the mask's bounding box plus the kernel's reach, not the whole volume.
    """
    hit = np.argwhere(mask)
    if len(hit) == 0:
        return np.zeros(0, dtype=np.float32)
    reach = [int(np.ceil(4.0 * s)) + 1 for s in sigma_vox]  # gaussian_filter truncates at 4 sd
    lo = np.maximum(hit.min(axis=0) - reach, 0)
    hi = np.minimum(hit.max(axis=0) + 1 + np.array(reach), mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    m = mask[box].astype(np.float32)
    num = ndimage.gaussian_filter(values[box].astype(np.float32) * m, sigma_vox, mode="constant")
    den = ndimage.gaussian_filter(m, sigma_vox, mode="constant")
    inside = mask[box]
    return (num[inside] / den[inside]).astype(np.float32)


def position_features(mask: np.ndarray) -> np.ndarray:
    """Per mask voxel (C order): x, y, z scaled to [0, 1] over the mask's bounding box, and
    |x - centre x| (centre = the mask's mean x), so left and right ilium look alike."""
    z, y, x = np.nonzero(mask)
    columns = []
    for index in (x, y, z):
        lo, hi = index.min(), index.max()
        columns.append((index - lo) / max(hi - lo, 1))
    columns.append(np.abs(columns[0] - columns[0].mean()))
    return np.column_stack(columns).astype(np.float32)


def logistic_features(
    hu_smooth: np.ndarray, position: np.ndarray, region: np.ndarray
) -> np.ndarray:
    """Feature matrix [smoothed HU, position (4), region one-hot (3)] of marrow voxels."""
    onehot = (region[:, None] == np.array(REGIONS)[None, :]).astype(np.float64)
    return np.column_stack([hu_smooth.astype(np.float64), position.astype(np.float64), onehot])


@dataclass(frozen=True)
class LogisticModel:
    """Logistic regression on standardised features (training mean and scale kept with it)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # on standardised features
    intercept: float

    def decision(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of each row."""
        return ((features - self.mean) / self.scale) @ self.coef + self.intercept

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(positive) of each row."""
        return expit(self.decision(features))

    @property
    def raw_coef(self) -> np.ndarray:
        """Coefficients on the unstandardised features (for reading the fit)."""
        return self.coef / self.scale


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_logistic(
    features: np.ndarray, y: np.ndarray, l2: float = 1e-4, max_iter: int = 100
) -> LogisticModel:
    """Newton's method with step halving on the mean log-loss + ``l2``/2 |w|^2 (intercept free).

    The small L2 keeps the optimum finite on separable data and the Hessian invertible when
    one-hot columns and the intercept are collinear.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    w = np.zeros(design.shape[1])

    def objective(weights: np.ndarray) -> float:
        return _log_loss(design @ weights, y) + 0.5 * float(np.sum(penalty * weights**2))

    current = objective(w)
    for _ in range(max_iter):
        p = expit(design @ w)
        grad = design.T @ (p - y) / len(y) + penalty * w
        hess = (design.T * (p * (1.0 - p))) @ design / len(y) + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-6:
            trial = w - size * step
            value = objective(trial)
            if value <= current:
                break
            size /= 2
        else:
            break
        w, gain, current = trial, current - value, value
        if gain < 1e-12 or np.max(np.abs(size * step)) < 1e-9:
            break
    return LogisticModel(mean=mean, scale=scale, coef=w[1:], intercept=float(w[0]))


def subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, spread at random but reproducibly, sorted."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
