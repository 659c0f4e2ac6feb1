"""Marrow as continuous fields: cellularity c(x), trabecular bone fraction b(x), and their CT/PET.

Red (haematopoietic) marrow is not a separate tissue but a share of every marrow voxel, varying
smoothly; so is the trabecular bone around it. Both come from a patient level (age, sex, bone
density; see ``params``), a site prior and a smooth random field. The site prior follows the adult
distribution of red marrow: more in the vertebral bodies, sacral alae, posterior ilium, iliac crest
and acetabular roof, less in the femoral neck and little in the femoral shaft (Kricun, Skeletal
Radiol 1985; Blebea et al., Semin Nucl Med 2007).
CT sees the mixture: HU = b HU_bone + (1 - b) (c HU_red + (1 - c) HU_fat). PET sees the cells:
uptake grows with c, times a smooth factor the CT cannot see (``Marrow`` in ``params``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from abmseg.synth.params import BONE_TISSUE_HU, Marrow
from abmseg.synth.skeleton import PelvisShape, rotation

FIELD_SPACING_MM = 3.0
BONE_CELL_COUPLING = 0.5


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing_zyx: tuple[float, ...],
    sigma_mm: float,
) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``sigma_mm``."""
    white = rng.standard_normal(shape, dtype=np.float32)
    # "reflect", not "wrap": opposite faces of a box (left and right hips) must stay independent.
    f = ndimage.gaussian_filter(white, [sigma_mm / s for s in spacing_zyx], mode="reflect")
    return f / max(float(f.std()), 1e-12)


def field_at(rng: np.random.Generator, points_xyz: np.ndarray, sigma_mm: float) -> np.ndarray:
    """A smooth unit field drawn on a coarse lattice around ``points`` and read at each point."""
    lo = points_xyz.min(axis=0) - 3 * sigma_mm
    hi = points_xyz.max(axis=0) + 3 * sigma_mm
    n = np.ceil((hi - lo) / FIELD_SPACING_MM).astype(int) + 1
    lattice = smooth_field(rng, (n[2], n[1], n[0]), (FIELD_SPACING_MM,) * 3, sigma_mm)
    idx = ((points_xyz - lo) / FIELD_SPACING_MM)[:, ::-1].T
    return ndimage.map_coordinates(lattice, idx, order=1, mode="nearest").astype(np.float32)


def to_pelvis_frame(points_xyz: np.ndarray, p: PelvisShape) -> np.ndarray:
    """World points -> the nominal pelvis frame of ``skeleton`` (undo move, tilt and scale)."""
    rot = rotation("x", p.tilt_deg)
    return ((points_xyz - np.asarray(p.origin)) @ rot) / p.scale


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def site_prior(bone: str, local: np.ndarray, p: PelvisShape) -> tuple[np.ndarray, np.ndarray]:
    """(cellularity logit offset, trabecular factor) at pelvis-frame points of one bone."""
    x, y, z = np.abs(local[:, 0]), local[:, 1], local[:, 2]
    one = np.ones(len(local))
    if bone in ("L4", "L5"):
        return 0.5 * one, 1.0 * one
    if bone == "sacrum":
        return 0.4 - 0.004 * np.clip(112.0 - z, 0.0, None), 0.85 * one
    if bone.startswith("hip_"):
        hx, rh = p.hip_half_width, p.head_radius
        posterior = 0.45 * _sigmoid((y - 40.0) / 12.0)
        crest = 0.35 * np.exp(-np.clip(p.crest_height - 25.0 - z, 0.0, None) / 15.0)
        roof_d2 = (x - hx) ** 2 + y**2 + (z - 1.2 * rh) ** 2
        roof = 0.3 * np.exp(-roof_d2 / (2 * 18.0**2))
        return -0.15 + posterior + crest + roof, 0.9 + 0.35 * np.exp(-roof_d2 / (2 * 25.0**2))
    if bone.startswith("femur_"):
        shaft = _sigmoid((-45.0 - z) / 12.0)
        neck = np.exp(-((z + 22.0) ** 2) / (2 * 10.0**2))
        return -0.2 - 0.35 * neck - 0.6 * shaft, 1.3 - 0.3 * neck - 0.95 * shaft
    raise ValueError(f"no site prior for bone {bone!r}")


def marrow_hu(c: np.ndarray, b: np.ndarray, m: Marrow) -> np.ndarray:
    """CT number of a marrow voxel from its cellularity and trabecular fraction."""
    return b * BONE_TISSUE_HU + (1.0 - b) * (c * m.red_hu + (1.0 - c) * m.fat_hu)


def marrow_uptake(c: np.ndarray, b: np.ndarray, m: Marrow) -> np.ndarray:
    """Mean SUV of a marrow voxel before the patient factor and the PET-only field."""
    return m.suv_scale * (1.0 - b) * (m.fat_uptake + c) ** m.uptake_power


def composition(
    bone_of_point: np.ndarray,
    bone_names: list[str],
    points_xyz: np.ndarray,
    p: PelvisShape,
    m: Marrow,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(c, b) at marrow points; ``bone_of_point`` indexes ``bone_names``."""
    local = to_pelvis_frame(points_xyz, p)
    site_c = np.zeros(len(points_xyz))
    site_b = np.ones(len(points_xyz))
    for k, name in enumerate(bone_names):
        sel = bone_of_point == k
        if sel.any():
            site_c[sel], site_b[sel] = site_prior(name, local[sel], p)
    field_c = field_at(rng, points_xyz, m.field_sigma_mm)
    # Denser trabeculae go with cellular marrow (Kricun 1985): the two fields share a part.
    field_b = BONE_CELL_COUPLING * field_c + np.sqrt(1.0 - BONE_CELL_COUPLING**2) * field_at(
        rng, points_xyz, m.field_sigma_mm
    )
    logit = np.log(m.cellularity / (1.0 - m.cellularity))
    c = _sigmoid(logit + m.site_weight * site_c + m.cell_sd * field_c)
    b = np.clip(m.trabecular * site_b * np.exp(m.bone_sd * field_b - m.bone_sd**2 / 2), 0.0, 0.6)
    return c.astype(np.float32), b.astype(np.float32)
