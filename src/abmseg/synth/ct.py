"""CT image formation: correlated noise, then the int16 storage every CT scanner uses."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from abmseg.synth.params import CT_NOISE_REF_VOXEL_MM3

CT_RESCALE_INTERCEPT = -1024.0  # stored value = HU + 1024, RescaleSlope 1
# Filtered back-projection noise is correlated over about a millimetre in-plane (its noise power
# spectrum peaks at mid frequencies); slices are reconstructed independently.
NOISE_CORRELATION_MM = 0.6


def ct_noise(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sd_ref: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise in HU with in-plane texture; sd scaled from the reference voxel to this one."""
    sd = sd_ref * np.sqrt(CT_NOISE_REF_VOXEL_MM3 / (spacing[0] * spacing[1] * spacing[2]))
    white = rng.standard_normal(shape, dtype=np.float32)
    sigma = (0.0, NOISE_CORRELATION_MM / spacing[1], NOISE_CORRELATION_MM / spacing[0])
    textured = ndimage.gaussian_filter(white, sigma, mode="wrap")
    return textured * np.float32(sd / max(float(textured.std()), 1e-12))


def ct_stored_values(
    hu: np.ndarray, spacing: tuple[float, float, float], sd_ref: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy CT as stored int16 values (HU = value + ``CT_RESCALE_INTERCEPT``)."""
    noisy = hu + ct_noise(hu.shape, spacing, sd_ref, rng)
    stored = np.rint(noisy) - CT_RESCALE_INTERCEPT
    return np.clip(stored, -32768, 32767).astype(np.int16)
