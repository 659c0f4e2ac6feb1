"""Whether probabilities and uncertainty maps can be trusted: calibration error, temperature
scaling, and how well an uncertainty map points at the voxels a mask gets wrong (issue 18).

- Expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017):
  voxels binned by their confidence (the top class probability) into equal-width bins; the
  voxel-weighted mean of |accuracy - confidence| over the bins.
- Temperature scaling (the same paper): one scalar T > 0 divides the log-probabilities before the
  softmax, fitted by minimising the negative log-likelihood on training patients only.
- Error-detection AUROC: the probability that a misclassified voxel has a higher uncertainty than
  a correct one (ties count half), the Mann-Whitney U statistic over n_error x n_correct.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import rankdata


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """ECE of top-class ``confidence`` in [0, 1] against ``correct`` (bool), same shape."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError("confidence and correct must be non-empty and of one shape")
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    accuracy = np.bincount(index, weights=correct, minlength=bins)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)
    used = counts > 0
    gaps = np.abs(accuracy[used] - mean_confidence[used])  # sums: |n acc - n conf| per bin
    return float(gaps.sum() / confidence.size)


def scaled_probabilities(log_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the class axis (axis 1 of (N, C))."""
    return np.exp(log_softmax(np.asarray(log_probabilities, np.float64) / temperature, axis=1))


def negative_log_likelihood(
    log_probabilities: np.ndarray, labels: np.ndarray, temperature: float
) -> float:
    scaled = log_softmax(np.asarray(log_probabilities, np.float64) / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(
    log_probabilities: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The T minimising the NLL of ``labels`` (N,) under softmax(log p / T), ``log p`` (N, C).

    A bounded search over log T: the NLL is smooth and, for fixed logits, has one minimum.
    """
    labels = np.asarray(labels, dtype=int)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(log_probabilities, labels, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def error_detection_auroc(uncertainty: np.ndarray, error: np.ndarray) -> float:
    """AUROC of ``uncertainty`` as a detector of ``error`` voxels (bool), ties counting half."""
    uncertainty = np.asarray(uncertainty, dtype=np.float64).ravel()
    error = np.asarray(error, dtype=bool).ravel()
    n_error, n_correct = int(error.sum()), int((~error).sum())
    if n_error == 0 or n_correct == 0:
        raise ValueError("the AUROC needs both misclassified and correct voxels")
    ranks = rankdata(uncertainty)  # average ranks: ties count half
    u = ranks[error].sum() - n_error * (n_error + 1) / 2.0
    return float(u / (n_error * n_correct))
