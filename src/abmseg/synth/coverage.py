"""Partial volume: the share of each voxel that a shape covers, by sub-voxel sampling at edges.

A scanner voxel integrates everything inside it, so a bone edge is a mix of bone and muscle, not a
staircase. Sampling every voxel at n^3 points would cost n^3 shape evaluations of the whole
volume; instead the shape is evaluated once at voxel centres, and only voxels whose centre lies
within a half voxel diagonal of the surface (the only ones that can be mixed) are resampled at
``SUB`` stratified sub-points per axis.
"""

from __future__ import annotations

import numpy as np

from abmseg.synth.grid import Grid
from abmseg.synth.sdf import Shape

# Sub-points per axis at edge voxels (x, y, z): 3 x 3 x 3 = 27 samples, coverage in 1/27 steps.
SUB = (3, 3, 3)
# Approximate distance functions can over-state the distance near a surface (smooth unions,
# subtractions: gradients up to about 2 measured), so a mixed voxel may look farther away than
# it is: widen the edge band.
EDGE_SLACK = 1.25


def _offsets(spacing: tuple[float, float, float]) -> np.ndarray:
    """(k, 3) stratified offsets (x, y, z) in mm around a voxel centre."""
    axes = [((np.arange(n) + 0.5) / n - 0.5) * s for n, s in zip(SUB, spacing, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1).astype(np.float32)


def coverage_levels(
    shape: Shape, grid: Grid, levels: tuple[float, ...] = (0.0,)
) -> tuple[tuple[slice, slice, slice], list[np.ndarray]] | None:
    """(index block, one float32 coverage in [0, 1] per level) of ``sdf + level < 0`` on ``grid``.

    Several levels share one evaluation of the shape: a bone and its marrow space (the bone shrunk
    by its cortex thickness) cost the same as the bone alone. None when the shape misses the grid.
    """
    # A voxel whose centre lies up to half a voxel outside the box can still overlap the shape.
    half = 0.5 * np.asarray(grid.spacing)
    found = grid.block(np.asarray(shape.lo) - half, np.asarray(shape.hi) + half)
    if found is None:
        return None
    block, (x, y, z) = found
    x, y, z = (v.astype(np.float32) for v in (x, y, z))
    d = np.broadcast_to(shape(x, y, z), (z.shape[0], y.shape[1], x.shape[2]))
    half_diag = 0.5 * float(np.linalg.norm(grid.spacing)) * EDGE_SLACK
    offsets = _offsets(grid.spacing)
    lv = [np.float32(level) for level in levels]
    out = [(d + level < 0).astype(np.float32) for level in lv]
    edge = np.zeros(d.shape, dtype=bool)
    for level in lv:
        edge |= np.abs(d + level) < half_diag
    if edge.any():
        kz, ky, kx = np.nonzero(edge)
        px, py, pz = x[0, 0, kx], y[0, ky, 0], z[kz, 0, 0]
        inside = [np.zeros(px.shape, dtype=np.float32) for _ in lv]
        for ox, oy, oz in offsets:
            ds = shape(px + ox, py + oy, pz + oz)
            for count, level in zip(inside, lv, strict=True):
                count += ds + level < 0
        for cov, count in zip(out, inside, strict=True):
            cov[edge] = count / np.float32(len(offsets))
    return block, out


def coverage(shape: Shape, grid: Grid) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """(index block, float32 coverage in [0, 1]) of ``shape`` on ``grid``; None when it misses."""
    found = coverage_levels(shape, grid)
    return None if found is None else (found[0], found[1][0])
