"""sPET vs PET on SUV: PSNR, SSIM and NMSE, restricted to a body mask.

MAX of PSNR (and SSIM's data range) is a fixed SUV value, by default the normalisation ceiling
(SUV 10): a fixed MAX keeps patients comparable, where the per-image maximum would be set by the
bladder. SSIM follows Wang et al. (2004): Gaussian window sigma 1.5, K1 0.01, K2 0.03, computed on
each axial slice (the networks are 2D) and averaged over the mask's voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _masked(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None):
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if mask is None:
        return pred.ravel(), ref.ravel()
    mask = np.asarray(mask, bool)
    if mask.shape != ref.shape or not mask.any():
        raise ValueError("mask must have the images' shape and select at least one voxel")
    return pred[mask], ref[mask]


def psnr(
    pred: np.ndarray, ref: np.ndarray, max_value: float, mask: np.ndarray | None = None
) -> float:
    """10 log10(MAX^2 / MSE) in dB; inf for identical images."""
    p, r = _masked(pred, ref, mask)
    mse = float(np.mean((p - r) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(max_value**2 / mse))


def nmse(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """sum (y - yhat)^2 / sum y^2 (the paper's definition)."""
    p, r = _masked(pred, ref, mask)
    denominator = float(np.sum(r**2))
    if denominator == 0:
        raise ValueError("NMSE is undefined for an all-zero reference")
    return float(np.sum((r - p) ** 2) / denominator)


def ssim_map_2d(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    truncate: float = 3.5,
) -> np.ndarray:
    """Per-pixel SSIM of two 2D images (Gaussian-weighted local statistics)."""
    x, y = np.asarray(pred, np.float64), np.asarray(ref, np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, sigma=sigma, truncate=truncate, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )


def ssim(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    sigma: float = 1.5,
) -> float:
    """Mean SSIM over the mask, the SSIM map computed slice by slice (axis 0 is z) with a
    Gaussian window of ``sigma`` pixels."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    if pred.ndim == 2:
        pred, ref = pred[None], ref[None]
        mask = None if mask is None else np.asarray(mask)[None]
    values = np.stack(
        [ssim_map_2d(p, r, data_range, sigma) for p, r in zip(pred, ref, strict=True)]
    )
    if mask is None:
        return float(values.mean())
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("mask selects no voxel")
    return float(values[mask].mean())
