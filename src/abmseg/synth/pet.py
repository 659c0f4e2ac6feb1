"""PET image formation: scanner blur, patient motion, noise, and per-slice int16 storage."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from pydicom.valuerep import format_number_as_ds
from scipy import ndimage

from abmseg.synth.grid import Grid
from abmseg.synth.params import PET_NOISE_FLOOR, PET_NOISE_GAIN, PSF_FWHM_MM, Motion

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # 1 / 2.3548
PET_MAX_STORED = 32000


def motion_transform(motion: Motion) -> sitk.Euler3DTransform:
    """The recorded motion as SimpleITK uses it: maps PET-world points to CT-world points."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(motion.center)
    transform.SetRotation(*motion.angles_rad)
    transform.SetTranslation(motion.translation_mm)
    return transform


def blur_and_move(suv: np.ndarray, anatomy: Grid, pet: Grid, motion: Motion) -> np.ndarray:
    """Noise-free PET SUV: PSF blur on the CT-spaced grid, then pet(p) = blurred(T(p))."""
    # scipy, not SimpleITK's recursive filter: the tiny preset's sigma is < 1 voxel along z,
    # where the recursive approximation is poor.
    sigma_vox = [PSF_FWHM_MM * FWHM_TO_SIGMA / anatomy.spacing[i] for i in (2, 1, 0)]
    blurred = anatomy.image(
        ndimage.gaussian_filter(suv.astype(np.float32), sigma_vox, mode="nearest")
    )
    reference = pet.image(np.zeros(pet.shape, dtype=np.float32))
    moved = sitk.Resample(
        blurred, reference, motion_transform(motion), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    return np.maximum(sitk.GetArrayFromImage(moved), 0.0)


def add_pet_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent Gaussian noise (sd grows with sqrt(SUV)), clipped at zero."""
    sd = PET_NOISE_GAIN * np.sqrt(np.maximum(clean, 0.0)) + PET_NOISE_FLOOR
    noisy = clean + sd * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.maximum(noisy, 0.0).astype(np.float32)


def quantize_slice(values: np.ndarray) -> tuple[np.ndarray, str]:
    """int16 pixels and the RescaleSlope (as written, <= 16 characters) of one slice.

    The slope is rounded to its DICOM decimal string first and the pixels are computed with that
    rounded value, so pixel * slope read back from the file is exactly what was intended.
    """
    top = float(values.max())
    if top <= 0.0:
        return np.zeros(values.shape, dtype=np.int16), "1"
    text = format_number_as_ds(top / PET_MAX_STORED)
    stored = np.rint(values / float(text))
    return np.clip(stored, 0, 32767).astype(np.int16), text
