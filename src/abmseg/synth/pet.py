"""PET image formation: emission, scanner blur, patient motion, noise, per-slice int16 storage.

True uptake is averaged onto an emission grid (the anatomy grid binned in-plane), marrow cells'
uptake multiplied by the patient factor and by a smooth field the CT does not show, blurred by the
scanner PSF, sampled on the PET grid through the PET-CT motion, and given signal-dependent noise.
The ceiling's Monte Carlo (``ceiling``) repeats the same steps with other draws.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from pydicom.valuerep import format_number_as_ds
from scipy import ndimage

from abmseg.synth.grid import Grid
from abmseg.synth.marrow import smooth_field
from abmseg.synth.params import PET_NOISE_FLOOR, PET_NOISE_GAIN, PSF_FWHM_MM, Marrow, Motion

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # 1 / 2.3548
PET_MAX_STORED = 32000


def motion_transform(motion: Motion) -> sitk.Euler3DTransform:
    """The recorded motion as SimpleITK uses it: maps PET-world points to CT-world points."""
    transform = sitk.Euler3DTransform()
    transform.SetComputeZYX(False)  # as truth.json states (and SimpleITK's default)
    transform.SetCenter(motion.center)
    transform.SetRotation(*motion.angles_rad)
    transform.SetTranslation(motion.translation_mm)
    return transform


def emission_grid(anatomy: Grid, factor: int) -> Grid:
    """The anatomy grid with ``factor`` x ``factor`` voxels merged in-plane."""
    nx, ny = anatomy.size[0] // factor, anatomy.size[1] // factor
    sx, sy = anatomy.spacing[0] * factor, anatomy.spacing[1] * factor
    shift = (factor - 1) / 2
    origin = (
        anatomy.origin[0] + shift * anatomy.spacing[0],
        anatomy.origin[1] + shift * anatomy.spacing[1],
        anatomy.origin[2],
    )
    return Grid((nx, ny, anatomy.size[2]), (sx, sy, anatomy.spacing[2]), origin)


def bin_xy(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` in-plane blocks of a (z, y, x) array."""
    if factor == 1:
        return values.astype(np.float32, copy=False)
    z, y, x = values.shape
    ny, nx = y // factor, x // factor
    cut = values[:, : ny * factor, : nx * factor]
    return cut.reshape(z, ny, factor, nx, factor).mean(axis=(2, 4), dtype=np.float32)


def marrow_box(uptake: np.ndarray, grid: Grid, margin_mm: float) -> tuple[slice, slice, slice]:
    """Index box (z, y, x) around every voxel with marrow uptake, plus ``margin_mm``."""
    out = []
    for axis, spacing in ((0, grid.spacing[2]), (1, grid.spacing[1]), (2, grid.spacing[0])):
        hit = np.flatnonzero(uptake.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = int(np.ceil(margin_mm / spacing))
        out.append(
            slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + 1 + pad, uptake.shape[axis]))
        )
    return out[0], out[1], out[2]


def sub_grid(grid: Grid, box: tuple[slice, slice, slice]) -> Grid:
    """The part of ``grid`` inside an index box (z, y, x)."""
    zs, ys, xs = box
    origin = (
        grid.origin[0] + xs.start * grid.spacing[0],
        grid.origin[1] + ys.start * grid.spacing[1],
        grid.origin[2] + zs.start * grid.spacing[2],
    )
    size = (xs.stop - xs.start, ys.stop - ys.start, zs.stop - zs.start)
    return Grid(size, grid.spacing, origin)


def marrow_emission(
    uptake_box: np.ndarray, box_grid: Grid, m: Marrow, factor: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(marrow cells' SUV on the box, the field g): factor x uptake x exp(sd g - sd^2/2)."""
    g = smooth_field(rng, uptake_box.shape, box_grid.spacing[::-1], m.pet_sigma_mm)
    suv = np.float32(factor) * uptake_box * np.exp(np.float32(m.pet_sd) * g - m.pet_sd**2 / 2)
    return suv, g


def blur(values: np.ndarray, grid: Grid) -> sitk.Image:
    """The scanner's Gaussian PSF (scipy: exact for sub-voxel sigmas, unlike recursive filters)."""
    sigma_vox = [PSF_FWHM_MM * FWHM_TO_SIGMA / grid.spacing[i] for i in (2, 1, 0)]
    return grid.image(ndimage.gaussian_filter(values, sigma_vox, mode="nearest"))


def sample(image: sitk.Image, target: Grid, transform: sitk.Transform | None = None) -> np.ndarray:
    """``image`` read at ``target``'s voxel centres (through ``transform``: target -> image)."""
    reference = target.image(np.zeros(target.shape, dtype=np.float32))
    moved = sitk.Resample(
        image,
        reference,
        transform or sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(moved)


def add_pet_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent Gaussian noise (sd grows with sqrt(SUV)), clipped at zero."""
    clean = np.maximum(clean, 0.0)
    sd = PET_NOISE_GAIN * np.sqrt(clean) + PET_NOISE_FLOOR
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
