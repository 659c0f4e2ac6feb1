"""Tissue, bone-region, CT-number, true-SUV and ABM-label maps of one patient on a grid.

The label follows the usual PET definition of active bone marrow: marrow whose uptake is at least
the patient's mean marrow uptake, split by pelvic region.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage

from abmseg.synth.grid import Grid
from abmseg.synth.params import PatientParams


class Tissue(IntEnum):
    AIR = 0
    BED = 1
    FAT = 2
    SOFT = 3
    BLADDER = 4
    GAS = 5
    CORTEX = 6
    YELLOW = 7
    RED = 8


@dataclass
class Anatomy:
    """Noise-free maps (z, y, x) on ``grid``."""

    grid: Grid
    tissue: np.ndarray  # uint8 Tissue codes
    region: np.ndarray  # uint8 bone region (cortex and marrow), 0 outside bone
    hu: np.ndarray  # float32 CT numbers without noise
    suv: np.ndarray  # float32 true SUVbw
    label: np.ndarray  # uint8 ABM label: region id of active marrow
    marrow_mean_suv: float


def _body_and_bed(p: PatientParams, grid: Grid, tissue: np.ndarray) -> None:
    x, y, z = grid.axis(0), grid.axis(1), grid.axis(2)
    bed_rows = (y >= p.bed.y_range_mm[0]) & (y <= p.bed.y_range_mm[1])
    x_mid = grid.origin[0] + (grid.size[0] - 1) / 2 * grid.spacing[0]
    bed_cols = np.abs(x - x_mid) <= p.bed.half_width_mm
    tissue[:, bed_rows[:, None] & bed_cols[None, :]] = Tissue.BED

    cx, cy = p.body.center_xy
    dx2 = ((x - cx) ** 2)[None, :]
    dy2 = ((y - cy) ** 2)[:, None]
    a, b = p.body.semi_at(z)
    ai, bi = p.body.semi_at(z, inset_mm=p.body.fat_mm)
    for k in range(grid.size[2]):  # slice by slice: the full 3-D float volume is 200+ MB
        sl = tissue[k]
        sl[dx2 / a[k] ** 2 + dy2 / b[k] ** 2 <= 1.0] = Tissue.FAT
        sl[dx2 / ai[k] ** 2 + dy2 / bi[k] ** 2 <= 1.0] = Tissue.SOFT


def _soft_organs(p: PatientParams, grid: Grid, tissue: np.ndarray) -> None:
    for solid, code in [(p.bladder, Tissue.BLADDER)] + [(g, Tissue.GAS) for g in p.gas]:
        found = solid.on(grid)
        if found is None:
            continue
        sl, mask = found
        block = tissue[sl]
        block[mask & (block == Tissue.SOFT)] = code


def _bones(p: PatientParams, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Region map and marrow mask; where regions overlap, the lower region id wins."""
    region = np.zeros(grid.shape, dtype=np.uint8)
    marrow = np.zeros(grid.shape, dtype=bool)
    for rid in sorted({bone.region for bone in p.bones}):
        for bone in (b for b in p.bones if b.region == rid):
            box = grid.block(*bone.solid.bounds())
            if box is None:
                continue
            sl, (x, y, z) = box
            outer = bone.solid.inside(x, y, z)
            inner = bone.solid.shrunk(bone.cortex_mm).inside(x, y, z)
            reg = region[sl]
            claim = outer & ((reg == 0) | (reg == rid))
            reg[claim] = rid
            marrow[sl][claim & inner] = True
    return region, marrow


def _smooth_fields(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: list[float], n: int
) -> list[np.ndarray]:
    """``n`` independent Gaussian-filtered noise fields, each scaled to unit standard deviation."""
    fields = []
    for _ in range(n):
        f = ndimage.gaussian_filter(
            rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="reflect"
        )
        fields.append(f / max(float(f.std()), 1e-12))
    return fields


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def build_anatomy(p: PatientParams, grid: Grid, rng: np.random.Generator) -> Anatomy:
    """Evaluate patient ``p`` on ``grid``; ``rng`` drives only the marrow texture fields."""
    t = p.tissues
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    _body_and_bed(p, grid, tissue)
    _soft_organs(p, grid, tissue)
    region, marrow = _bones(p, grid)
    tissue[region > 0] = Tissue.CORTEX
    tissue[marrow] = Tissue.YELLOW

    hu_lut = np.zeros(len(Tissue), dtype=np.float32)
    suv_lut = np.zeros(len(Tissue), dtype=np.float32)
    for code, hu, suv in [
        (Tissue.AIR, -1000.0, 0.0),
        (Tissue.BED, p.bed.hu, 0.0),
        (Tissue.FAT, t.fat_hu, t.fat_suv),
        (Tissue.SOFT, t.soft_hu, t.soft_suv),
        (Tissue.BLADDER, t.bladder_hu, t.bladder_suv),
        (Tissue.GAS, t.gas_hu, 0.0),
        (Tissue.CORTEX, t.cortex_hu, t.cortex_suv),
        (Tissue.YELLOW, t.yellow_hu, t.yellow_suv),
        (Tissue.RED, t.red_hu, t.red_suv_mean),
    ]:
        hu_lut[code], suv_lut[code] = hu, suv

    # Marrow: red where a smooth random field is in its top ``active_fraction``; texture on top.
    box = _bbox(marrow)
    sigma_vox = [t.field_sigma_mm / grid.spacing[i] for i in (2, 1, 0)]
    select, uptake, texture = _smooth_fields(rng, marrow[box].shape, sigma_vox, 3)
    m = marrow[box]
    threshold = np.quantile(select[m], 1.0 - t.active_fraction)
    tissue[box][m & (select >= threshold)] = Tissue.RED

    hu = hu_lut[tissue]
    suv = suv_lut[tissue]
    tis = tissue[box]
    red = tis == Tissue.RED
    hu[box][m] += np.float32(t.texture_hu / 2) * texture[m]
    red_suv = t.red_suv_mean * (1.0 + (t.red_suv_spread / 2) * uptake[red])
    suv[box][red] = np.clip(red_suv, 2.0, 4.0)

    marrow_mean = float(suv[marrow].mean())
    label = np.where(marrow & (suv >= marrow_mean), region, 0).astype(np.uint8)
    return Anatomy(grid, tissue, region, hu, suv, label, marrow_mean)
