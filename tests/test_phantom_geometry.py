"""The phantom's shape vocabulary against closed-form volumes: partial volume must add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abmseg.synth.coverage import coverage, coverage_levels
from abmseg.synth.grid import Grid
from abmseg.synth.sdf import (
    capsule,
    ellipsoid,
    mirrored_x,
    rotation,
    smooth_union,
    sphere,
    subtract,
    transformed,
    union,
)

# A deliberately anisotropic grid (like CT: fine in-plane, thick slices), off-centre origin.
GRID = Grid((80, 80, 40), (1.5, 1.5, 3.0), (-59.3, -60.1, -58.7))


def _volume(shape, grid: Grid = GRID) -> float:
    found = coverage(shape, grid)
    voxel = grid.spacing[0] * grid.spacing[1] * grid.spacing[2]
    return 0.0 if found is None else float(found[1].sum()) * voxel


def test_sphere_volume_with_partial_volume() -> None:
    r = 17.3
    exact = 4 / 3 * math.pi * r**3
    assert _volume(sphere((3.1, -2.2, 1.7), r)) == pytest.approx(exact, rel=0.01)


def test_partial_volume_beats_centre_sampling() -> None:
    """Counting voxel centres alone is off by more than the sub-sampled coverage."""
    r = 9.4
    s = sphere((0.4, 0.3, 0.9), r)
    exact = 4 / 3 * math.pi * r**3
    block, cov = coverage(s, GRID)
    x, y, z = (GRID.axis(i)[b] for i, b in ((0, block[2]), (1, block[1]), (2, block[0])))
    centres = s(x[None, None, :], y[None, :, None], z[:, None, None]) < 0
    voxel = 1.5 * 1.5 * 3.0
    assert abs(cov.sum() * voxel - exact) < abs(centres.sum() * voxel - exact)
    assert ((cov > 0) & (cov < 1)).sum() > 100  # edges are mixed, not a staircase


def test_ellipsoid_and_rotation_keep_volume() -> None:
    semi = (22.0, 12.0, 16.0)
    exact = 4 / 3 * math.pi * np.prod(semi)
    e = ellipsoid((1.0, 2.0, -3.0), semi, rotation("z", 30.0) @ rotation("x", 20.0))
    assert _volume(e) == pytest.approx(exact, rel=0.02)


def test_capsule_volume() -> None:
    a, b, r = (-20.0, -5.0, -10.0), (18.0, 7.0, 12.0), 6.5
    length = float(np.linalg.norm(np.subtract(b, a)))
    exact = math.pi * r**2 * length + 4 / 3 * math.pi * r**3
    assert _volume(capsule(a, b, r)) == pytest.approx(exact, rel=0.02)


def test_marrow_level_is_the_shrunk_shape() -> None:
    """coverage_levels(shape, (0, t)) gives the solid and the solid shrunk by t in one pass."""
    r, t = 15.0, 2.5
    block, (outer, inner) = coverage_levels(sphere((0.0, 0.0, 0.0), r), GRID, (0.0, t))
    voxel = 1.5 * 1.5 * 3.0
    assert outer.sum() * voxel == pytest.approx(4 / 3 * math.pi * r**3, rel=0.01)
    assert inner.sum() * voxel == pytest.approx(4 / 3 * math.pi * (r - t) ** 3, rel=0.015)
    assert np.all(inner <= outer + 1e-6)


def test_union_subtract_and_smooth_union() -> None:
    a = sphere((-8.0, 0.0, 0.0), 12.0)
    b = sphere((8.0, 0.0, 0.0), 12.0)
    va, vu = _volume(a), _volume(union([a, b]))
    # Two spheres of radius R whose centres are d apart overlap by a lens of
    # pi (4R + d)(2R - d)^2 / 12.
    lens = math.pi * (4 * 12.0 + 16.0) * (2 * 12.0 - 16.0) ** 2 / 12
    assert vu == pytest.approx(2 * va - lens, rel=0.02)
    # The fillet adds bone where the parts meet; the polynomial smooth minimum lowers the
    # distance by at most k / 4, so the result lies inside the union grown by 2 mm.
    smooth = _volume(smooth_union([a, b], k=8.0))
    assert vu + 0.01 * vu < smooth < _volume(union([a.grown(2.0), b.grown(2.0)]))
    assert _volume(subtract(a, b)) == pytest.approx(va - lens, rel=0.03)


def test_transform_and_mirror() -> None:
    r = 8.0
    c = capsule((5.0, 0.0, 0.0), (30.0, 0.0, 0.0), r)
    exact = math.pi * r**2 * 25.0 + 4 / 3 * math.pi * r**3
    moved = transformed(c, rotation("z", 90.0), (0.0, 0.0, 0.0), (0.0, 0.0, 10.0))
    # (30, 0, 0) rotated 90 degrees about z is (0, 30, 0), then lifted by 10 mm.
    assert moved(np.float32(0.0), np.float32(30.0), np.float32(10.0)) == pytest.approx(-r)
    # 27 sub-points per edge voxel: a few per cent for a tube this thin across 3 mm slices.
    assert _volume(c) == pytest.approx(exact, rel=0.03)
    assert _volume(moved) == pytest.approx(exact, rel=0.03)
    m = mirrored_x(c, 0.0)
    assert m(np.float32(-30.0), np.float32(0.0), np.float32(0.0)) == pytest.approx(-r)
    assert m.lo[0] == pytest.approx(-38.0) and m.hi[0] == pytest.approx(3.0)
