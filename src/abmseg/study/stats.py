"""Paired statistics of the validation study: every comparison is within patient.

Two methods are always evaluated on the same test patients, so the unit of resampling (and of
the signed-rank test) is the patient's pair of scores, never the pooled scores of each method.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def _complete_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """The differences ``a - b`` of the pairs where neither value is NaN.

    A NaN marks a patient a method has no score for; dropping the whole pair keeps the
    comparison paired.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need equal 1-D lengths, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep] - y[keep]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of the paired differences ``a - b`` and its percentile bootstrap CI.

    Patients (pairs) are resampled with replacement, so the between-patient correlation of the
    two methods is kept. One ``(resamples, n)`` index matrix from ``default_rng(seed)`` makes it
    fast and reproducible. Pairs with a NaN are dropped first; with fewer than two complete
    pairs no interval exists and ``(mean or nan, nan, nan)`` is returned.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    diff = _complete_differences(a, b)
    n = diff.size
    mean = float(diff.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    means = diff[index].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return mean, float(low), float(high)


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p value of the paired differences ``a - b``.

    Rank-based, so one patient with a collapsed segmentation cannot dominate the test the way
    it can dominate the mean. Zero differences are discarded (scipy's ``'wilcox'`` method) and
    NaN pairs dropped; with fewer than two non-zero differences there is no test: NaN.
    """
    diff = _complete_differences(a, b)
    if np.count_nonzero(diff) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
        except ValueError:
            return float("nan")
    return float(result.pvalue)


def paired_comparison(
    a_name: str,
    b_name: str,
    a_values: Sequence[float],
    b_values: Sequence[float],
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """One row of the paired table: method ``a`` against ``b`` on the same patients.

    ``n`` counts the complete pairs, the ones the mean, the interval and the test all use.
    """
    n = int(_complete_differences(a_values, b_values).size)
    mean, low, high = paired_bootstrap(a_values, b_values, resamples=resamples, seed=seed)
    return {
        "a": a_name,
        "b": b_name,
        "n": n,
        "delta_dice_mean": mean,
        "ci_low": low,
        "ci_high": high,
        "p_wilcoxon": wilcoxon_p(a_values, b_values),
    }
