"""Paint one patient onto a grid: noise-free CT numbers, uptake, tissue, marrow and region maps.

Layers are painted back to front with their partial-volume coverage (``coverage``): a voxel half
covered by bone gets half the bone's CT number and half of what lay beneath. The body outline is
fitted around the skeleton (muscle margins and subcutaneous fat drawn per patient), the cavity and
every inner layer are clipped to the body wall, and bones come last with their marrow fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from abmseg.synth.coverage import coverage, coverage_levels
from abmseg.synth.grid import Grid
from abmseg.synth.marrow import composition, marrow_hu, marrow_uptake
from abmseg.synth.params import PatientParams
from abmseg.synth.sdf import Shape, intersect
from abmseg.synth.skeleton import Bone, build_skeleton, place_in_pelvis
from abmseg.synth.soft_tissue import Tissue, cavity, soft_tissue_layers


@dataclass
class Phantom:
    """Noise-free maps (z, y, x) on ``grid`` and the marrow voxels' composition."""

    grid: Grid
    tissue: np.ndarray  # uint8 Tissue of the dominant layer
    hu: np.ndarray  # float32 CT number without noise
    suv_other: np.ndarray  # float32 true SUV of everything but marrow cells
    marrow_frac: np.ndarray  # float32 share of each voxel that is marrow space
    region: np.ndarray  # uint8 region of voxels at least half marrow
    marrow_index: np.ndarray  # flat indices of voxels with any marrow
    cellularity: np.ndarray  # c at those voxels
    trabecular: np.ndarray  # b at those voxels
    uptake: np.ndarray  # marrow uptake before patient factor and PET-only field
    body_back_y: float  # most posterior point of the skin (the bed lies behind it)

    def marrow_uptake_map(self) -> np.ndarray:
        """float32 map of marrow share x uptake (zero outside marrow)."""
        out = np.zeros(self.grid.shape, dtype=np.float32)
        out.ravel()[self.marrow_index] = self.marrow_frac.ravel()[self.marrow_index] * self.uptake
        return out


class _Canvas:
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.hu = np.full(grid.shape, -1000.0, dtype=np.float32)
        self.suv = np.zeros(grid.shape, dtype=np.float32)

    def paint(self, block, alpha: np.ndarray, tissue: Tissue, hu, suv) -> None:
        """Cover ``block`` with ``alpha`` of a tissue (scalar or per-voxel values)."""
        h, s = self.hu[block], self.suv[block]
        h += alpha * (np.float32(hu) - h) if np.isscalar(hu) else alpha * (hu - h)
        s += alpha * (np.float32(suv) - s) if np.isscalar(suv) else alpha * (suv - s)
        self.tissue[block][alpha >= 0.5] = tissue

    def layer(self, shape: Shape, tissue: Tissue, hu: float, suv: float) -> None:
        found = coverage(shape, self.grid)
        if found is not None:
            self.paint(found[0], found[1], tissue, hu, suv)


def _bone_extent(grid: Grid, bones: list[tuple[Bone, tuple, list[np.ndarray]]], cx, cy):
    """Per slice: largest |x - cx|, largest and smallest y of any bone (NaN where none)."""
    nz = grid.shape[0]
    x_ext, y_max, y_min = np.full(nz, np.nan), np.full(nz, np.nan), np.full(nz, np.nan)
    xs, ys = grid.axis(0), grid.axis(1)
    for _bone, block, (outer, _marrow) in bones:
        zs, yb, xb = block
        inside = outer > 0
        cols = inside.any(axis=1)  # (z, x)
        rows = inside.any(axis=2)  # (z, y)
        for k in range(inside.shape[0]):
            if not cols[k].any():
                continue
            gx = np.abs(xs[xb][cols[k]] - cx).max()
            gy = ys[yb][rows[k]]
            zi = zs.start + k
            x_ext[zi] = np.fmax(x_ext[zi], gx)
            y_max[zi] = np.fmax(y_max[zi], gy.max())
            y_min[zi] = np.fmin(y_min[zi], gy.min())
    return x_ext, y_max, y_min


def _profile(values: np.ndarray, dz: float, reach_mm: float) -> np.ndarray:
    """Fill gaps from the nearest slice, take a running max and smooth (no waists or steps)."""
    ok = np.flatnonzero(~np.isnan(values))
    filled = values[ok[np.abs(np.arange(len(values))[:, None] - ok[None, :]).argmin(axis=1)]]
    size = max(int(round(2 * reach_mm / dz)) | 1, 1)
    peak = ndimage.maximum_filter1d(filled, size, mode="nearest")
    return ndimage.gaussian_filter1d(peak, reach_mm / dz / 2, mode="nearest")


def _trunk(grid: Grid, p: PatientParams, extent) -> Shape:
    """Muscle-wall outline: per slice two half ellipses (front, back) around the skeleton."""
    b = p.body
    cx, cy = b.centre_xy
    x_ext, y_max, y_min = extent
    dz = grid.spacing[2]
    a = _profile(x_ext, dz, 30.0) + b.lateral_muscle_mm
    back = _profile(y_max - cy, dz, 30.0) + b.posterior_muscle_mm
    front = np.maximum(_profile(cy - y_min, dz, 30.0) + 25.0, b.belly_mm)
    z0, dz32 = np.float32(grid.origin[2]), np.float32(dz)
    a32, back32, front32 = (v.astype(np.float32) for v in (a, back, front))
    n = len(a32) - 1

    def sdf(x, y, z):
        k = np.clip(np.rint((z - z0) / dz32), 0, n).astype(np.intp)
        ak, bk = a32[k], np.where(y > cy, back32[k], front32[k])
        r = np.sqrt(((x - cx) / ak) ** 2 + ((y - cy) / bk) ** 2)
        return (r - 1.0) * np.minimum(ak, bk)

    lo = np.array([cx - a.max(), cy - front.max(), -1e4])
    hi = np.array([cx + a.max(), cy + back.max(), 1e4])
    return Shape(sdf, lo, hi)


def _bed(grid: Grid, p: PatientParams, back_y: float) -> Shape:
    y0 = back_y + p.bed.gap_mm
    y1 = y0 + p.bed.thickness_mm
    xm = grid.origin[0] + (grid.size[0] - 1) / 2 * grid.spacing[0]
    hw = p.bed.half_width_mm

    def sdf(x, y, z):
        return np.maximum(np.abs(x - xm) - hw, np.maximum(y0 - y, y - y1)) + 0 * z

    return Shape(sdf, np.array([xm - hw, y0, -1e4]), np.array([xm + hw, y1, 1e4]))


def build_phantom(p: PatientParams, grid: Grid, rng: np.random.Generator) -> Phantom:
    """Evaluate patient ``p`` on ``grid``; ``rng`` drives only the marrow composition fields."""
    t = p.tissues
    bones = []
    for bone in build_skeleton(p.pelvis):
        if bone.marrow is None:
            found = coverage_levels(bone.outer, grid, (0.0, bone.cortex_mm))
            if found is not None:
                bones.append((bone, found[0], found[1]))
            continue
        outer = coverage(bone.outer, grid)
        inner = coverage(bone.marrow, grid)
        if outer is not None:
            marrow = np.zeros_like(outer[1])
            if inner is not None:
                _paste(marrow, outer[0], inner[1], inner[0])
            bones.append((bone, outer[0], [outer[1], np.minimum(marrow, outer[1])]))

    cx, cy = p.body.centre_xy
    trunk = _trunk(grid, p, _bone_extent(grid, bones, cx, cy))
    skin = trunk.grown(p.body.fat_mm)
    # The back of the skin: the trunk's posterior semi-axis plus fat, at its largest.
    probe_y = np.linspace(cy, cy + 400.0, 801, dtype=np.float32)
    probe_z = grid.axis(2).astype(np.float32)
    d = skin(np.float32(cx), probe_y[None, :], probe_z[:, None])
    back_y = float(probe_y[(d < 0).any(axis=0)].max())

    canvas = _Canvas(grid)
    canvas.layer(_bed(grid, p, back_y), Tissue.BED, p.bed.hu, 0.0)
    canvas.layer(skin, Tissue.FAT, t.fat_hu, t.fat_suv)
    canvas.layer(trunk, Tissue.MUSCLE, t.muscle_hu, t.muscle_suv)
    wall = trunk.grown(-p.body.wall_mm)
    cav = intersect(place_in_pelvis(cavity(p.pelvis), p.pelvis), wall)
    canvas.layer(cav, Tissue.VISCERAL_FAT, t.fat_hu + 10.0, t.fat_suv)
    props = {
        Tissue.FAT: (t.fat_hu, t.fat_suv),
        Tissue.MUSCLE: (t.muscle_hu, t.muscle_suv),
        Tissue.DISC: (t.disc_hu, t.disc_suv),
        Tissue.BOWEL_WALL: (t.bowel_wall_hu, t.bowel_wall_suv),
        Tissue.BOWEL_CONTENT: (t.bowel_content_hu, t.bowel_wall_suv * 0.5),
        Tissue.GAS: (t.gas_hu, 0.0),
        Tissue.URINE: (t.urine_hu, t.urine_suv),
        Tissue.VESSEL: (t.blood_hu, t.blood_suv),
        Tissue.TUMOUR: (t.tumour_hu, t.tumour_suv),
    }
    for la in soft_tissue_layers(p.pelvis, p.organs):
        hu, suv = props[la.tissue]
        suv = suv if la.suv is None else la.suv
        canvas.layer(intersect(la.shape, trunk), la.tissue, hu, suv)

    # Bones: cortex, then the marrow space with its composition.
    names = [bone.name for bone, _, _ in bones]
    for _bone, block, (outer, _marrow) in bones:
        canvas.paint(block, outer, Tissue.CORTEX, t.cortex_hu, t.cortex_suv)
    marrow_frac = np.zeros(grid.shape, dtype=np.float32)
    region = np.zeros(grid.shape, dtype=np.uint8)
    owner = np.full(grid.shape, -1, dtype=np.int16)
    for k, (bone, block, (_outer, marrow)) in enumerate(bones):
        better = marrow > marrow_frac[block]  # where two bones meet, the larger share owns
        owner[block][better] = k
        np.maximum(marrow_frac[block], marrow, out=marrow_frac[block])
        half = marrow >= 0.5
        if callable(bone.region):
            zs, ys, xs = (grid.axis(i)[s].astype(np.float32) for i, s in ((2, block[0]),
                          (1, block[1]), (0, block[2])))  # fmt: skip
            reg = bone.region(xs[None, None, :], ys[None, :, None], zs[:, None, None])
            region[block][half] = np.broadcast_to(reg, half.shape)[half]
        else:
            region[block][half] = bone.region
    index = np.flatnonzero(marrow_frac > 0)
    zi, yi, xi = np.unravel_index(index, grid.shape)
    points = np.stack([grid.axis(0)[xi], grid.axis(1)[yi], grid.axis(2)[zi]], axis=1)
    c, b = composition(owner.ravel()[index], names, points, p.pelvis, p.marrow, rng)
    alpha = marrow_frac.ravel()[index]
    hu_flat, suv_flat, tis_flat = canvas.hu.ravel(), canvas.suv.ravel(), canvas.tissue.ravel()
    hu_flat[index] += alpha * (marrow_hu(c, b, p.marrow) - hu_flat[index])
    suv_flat[index] *= 1.0 - alpha  # marrow cells' own uptake is kept apart (``uptake``)
    tis_flat[index[alpha >= 0.5]] = Tissue.MARROW
    return Phantom(
        grid=grid,
        tissue=canvas.tissue,
        hu=canvas.hu,
        suv_other=canvas.suv,
        marrow_frac=marrow_frac,
        region=region,
        marrow_index=index,
        cellularity=c,
        trabecular=b,
        uptake=marrow_uptake(c, b, p.marrow).astype(np.float32),
        body_back_y=back_y,
    )


def _paste(target: np.ndarray, target_block: tuple, values: np.ndarray, block: tuple) -> None:
    """Copy ``values`` (on ``block``) into ``target`` (on ``target_block``) where they overlap."""
    src, dst = [], []
    for tb, b in zip(target_block, block, strict=True):
        lo, hi = max(tb.start, b.start), min(tb.stop, b.stop)
        if lo >= hi:
            return
        dst.append(slice(lo - tb.start, hi - tb.start))
        src.append(slice(lo - b.start, hi - b.start))
    target[tuple(dst)] = values[tuple(src)]
