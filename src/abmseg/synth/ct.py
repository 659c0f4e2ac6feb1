"""CT image formation: noise, then the int16 storage every CT scanner uses."""

from __future__ import annotations

import numpy as np

CT_RESCALE_INTERCEPT = -1024.0  # stored value = HU + 1024, RescaleSlope 1


def ct_stored_values(hu: np.ndarray, noise_sd: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy CT as stored int16 values (HU = value + ``CT_RESCALE_INTERCEPT``)."""
    noisy = hu + np.float32(noise_sd) * rng.standard_normal(hu.shape, dtype=np.float32)
    stored = np.rint(noisy) - CT_RESCALE_INTERCEPT
    return np.clip(stored, -32768, 32767).astype(np.int16)
