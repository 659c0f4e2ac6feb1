"""Signed-distance shapes in world mm: the vocabulary the phantom's anatomy is written in.

A shape is a function ``sdf(x, y, z)`` of broadcastable coordinate arrays (negative inside) plus a
bounding box, so it can be evaluated on a grid block (partial volume, see ``coverage``) or on a list
of sub-voxel points. Bones fuse by smooth union, cavities are cut by subtraction, a cortex is the
shape's surface band (``sdf + t``): the same tricks as Inigo Quilez's distance-function notes
(https://iquilezles.org/articles/distfunctions/), which describe every primitive used here.
The distances are approximate away from the surface; only their sign and their value near the
surface (within a voxel or two) matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
SdfFn = Callable[[Array, Array, Array], Array]
EPS = np.float32(1e-6)


def rotation(axis: str, degrees: float) -> np.ndarray:
    """Rotation matrix about world axis ``x``, ``y`` or ``z`` (right-handed, degrees)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


@dataclass(frozen=True)
class Shape:
    """A signed-distance function with a world bounding box (lo, hi) that contains its inside."""

    sdf: SdfFn
    lo: np.ndarray
    hi: np.ndarray

    def __call__(self, x: Array, y: Array, z: Array) -> Array:
        return self.sdf(x, y, z)

    def grown(self, mm: float) -> Shape:
        """The shape offset outward by ``mm`` (negative: inward); the box grows with it."""
        f = self.sdf
        pad = max(mm, 0.0)
        return Shape(lambda x, y, z: f(x, y, z) - np.float32(mm), self.lo - pad, self.hi + pad)


def _box(centre: Sequence[float], half: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c, h = np.asarray(centre, dtype=np.float64), np.asarray(half, dtype=np.float64)
    return c - h, c + h


def ellipsoid(
    centre: Sequence[float], semi: Sequence[float], rot: np.ndarray | None = None
) -> Shape:
    """Ellipsoid (Quilez's bound k0 (k0 - 1) / k1, good near the surface)."""
    c = np.asarray(centre, dtype=np.float32)
    r = np.asarray(semi, dtype=np.float32)
    m = np.eye(3, dtype=np.float32) if rot is None else np.asarray(rot, dtype=np.float32)

    def sdf(x: Array, y: Array, z: Array) -> Array:
        d = (x - c[0], y - c[1], z - c[2])
        u = [d[0] * m[0, j] + d[1] * m[1, j] + d[2] * m[2, j] for j in range(3)]
        k0 = np.sqrt((u[0] / r[0]) ** 2 + (u[1] / r[1]) ** 2 + (u[2] / r[2]) ** 2)
        k1 = np.sqrt((u[0] / r[0] ** 2) ** 2 + (u[1] / r[1] ** 2) ** 2 + (u[2] / r[2] ** 2) ** 2)
        return k0 * (k0 - 1.0) / (k1 + EPS)

    half = np.sqrt(((np.abs(m) * r[None, :]) ** 2).sum(axis=1))
    return Shape(sdf, *_box(centre, half))


def sphere(centre: Sequence[float], radius: float) -> Shape:
    """Exact sphere."""
    c = np.asarray(centre, dtype=np.float32)
    r = np.float32(radius)

    def sdf(x: Array, y: Array, z: Array) -> Array:
        return np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r

    return Shape(sdf, *_box(centre, [radius] * 3))


def capsule(a: Sequence[float], b: Sequence[float], ra: float, rb: float | None = None) -> Shape:
    """Segment a-b swept by a sphere whose radius goes linearly from ``ra`` to ``rb``."""
    rb = ra if rb is None else rb
    pa = np.asarray(a, dtype=np.float32)
    ab = np.asarray(b, dtype=np.float32) - pa
    inv = np.float32(1.0 / max(float(ab @ ab), 1e-9))
    r0, dr = np.float32(ra), np.float32(rb - ra)

    def sdf(x: Array, y: Array, z: Array) -> Array:
        dx, dy, dz = x - pa[0], y - pa[1], z - pa[2]
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) * inv, 0.0, 1.0)
        ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
        return np.sqrt(ex * ex + ey * ey + ez * ez) - (r0 + t * dr)

    r = max(ra, rb)
    lo = np.minimum(np.asarray(a, float), np.asarray(b, float)) - r
    hi = np.maximum(np.asarray(a, float), np.asarray(b, float)) + r
    return Shape(sdf, lo, hi)


def chain(points: Sequence[Sequence[float]], radii: Sequence[float]) -> Shape:
    """A tube through ``points`` with a radius per point (union of tapered capsules)."""
    parts = [
        capsule(points[i], points[i + 1], radii[i], radii[i + 1]) for i in range(len(points) - 1)
    ]
    return union(parts)


def disc(
    centre: Sequence[float], semi_xy: Sequence[float], half_height: float, rot: np.ndarray, round_mm
) -> Shape:
    """An elliptic cylinder along its local z axis with rounded rims (a vertebral body, a disc)."""
    c = np.asarray(centre, dtype=np.float32)
    m = np.asarray(rot, dtype=np.float32)
    a, b = (np.float32(v - round_mm) for v in semi_xy)
    h = np.float32(half_height - round_mm)
    rr = np.float32(round_mm)

    def sdf(x: Array, y: Array, z: Array) -> Array:
        d = (x - c[0], y - c[1], z - c[2])
        u = [d[0] * m[0, j] + d[1] * m[1, j] + d[2] * m[2, j] for j in range(3)]
        radial = (np.sqrt((u[0] / a) ** 2 + (u[1] / b) ** 2) - 1.0) * min(a, b)
        axial = np.abs(u[2]) - h
        outside = np.sqrt(np.maximum(radial, 0.0) ** 2 + np.maximum(axial, 0.0) ** 2)
        return outside + np.minimum(np.maximum(radial, axial), 0.0) - rr

    # The rounded rim reaches round_mm * (long / short axis) past the core ellipse's long end.
    reach = round_mm * max(a, b) / min(a, b)
    semi = np.array([semi_xy[0] - round_mm + reach, semi_xy[1] - round_mm + reach, half_height])
    half = (np.abs(m) * semi[None, :]).sum(axis=1)
    return Shape(sdf, *_box(centre, half))


def union(shapes: Sequence[Shape]) -> Shape:
    """Hard union (minimum distance)."""
    fns = [s.sdf for s in shapes]

    def sdf(x: Array, y: Array, z: Array) -> Array:
        out = fns[0](x, y, z)
        for f in fns[1:]:
            out = np.minimum(out, f(x, y, z))
        return out

    return Shape(
        sdf, np.min([s.lo for s in shapes], axis=0), np.max([s.hi for s in shapes], axis=0)
    )


def smooth_union(shapes: Sequence[Shape], k: float) -> Shape:
    """Union with a fillet of about ``k`` mm where parts meet (bones that grew together)."""
    fns = [s.sdf for s in shapes]
    kk = np.float32(k)

    def sdf(x: Array, y: Array, z: Array) -> Array:
        out = fns[0](x, y, z)
        for f in fns[1:]:
            d = f(x, y, z)
            h = np.maximum(kk - np.abs(out - d), 0.0) / kk
            out = np.minimum(out, d) - h * h * kk * 0.25
        return out

    pad = k / 4
    lo = np.min([s.lo for s in shapes], axis=0) - pad
    hi = np.max([s.hi for s in shapes], axis=0) + pad
    return Shape(sdf, lo, hi)


def subtract(shape: Shape, cut: Shape) -> Shape:
    """``shape`` minus ``cut`` (a socket, a canal, a joint space)."""
    f, g = shape.sdf, cut.sdf
    return Shape(lambda x, y, z: np.maximum(f(x, y, z), -g(x, y, z)), shape.lo, shape.hi)


def intersect(shape: Shape, other: Shape) -> Shape:
    """Points inside both; the box is the overlap of the two boxes."""
    f, g = shape.sdf, other.sdf
    return Shape(
        lambda x, y, z: np.maximum(f(x, y, z), g(x, y, z)),
        np.maximum(shape.lo, other.lo),
        np.minimum(shape.hi, other.hi),
    )


def transformed(shape: Shape, rot: np.ndarray, pivot: Sequence[float], shift: Sequence[float]):
    """The shape rotated by ``rot`` about ``pivot`` and then moved by ``shift`` (world mm)."""
    m = np.asarray(rot, dtype=np.float32)
    p = np.asarray(pivot, dtype=np.float32)
    t = np.asarray(shift, dtype=np.float32)
    f = shape.sdf

    def sdf(x: Array, y: Array, z: Array) -> Array:
        d = (x - p[0] - t[0], y - p[1] - t[1], z - p[2] - t[2])
        # Inverse rotation (transpose) takes world points back into the shape's frame.
        u = [d[0] * m[0, j] + d[1] * m[1, j] + d[2] * m[2, j] for j in range(3)]
        return f(u[0] + p[0], u[1] + p[1], u[2] + p[2])

    corners = np.array(
        [[c0, c1, c2] for c0 in (0, 1) for c1 in (0, 1) for c2 in (0, 1)], dtype=np.float64
    )
    box = shape.lo + corners * (shape.hi - shape.lo)
    moved = (box - pivot) @ np.asarray(rot, float).T + np.asarray(pivot) + np.asarray(shift)
    return Shape(sdf, moved.min(axis=0), moved.max(axis=0))


def mirrored_x(shape: Shape, x0: float) -> Shape:
    """Mirror image in the sagittal plane x = x0 (the other side of the body)."""
    f = shape.sdf
    x0f = np.float32(2 * x0)
    lo = np.array([2 * x0 - shape.hi[0], shape.lo[1], shape.lo[2]])
    hi = np.array([2 * x0 - shape.lo[0], shape.hi[1], shape.hi[2]])
    return Shape(lambda x, y, z: f(x0f - x, y, z), lo, hi)
