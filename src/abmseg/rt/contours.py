"""Planar contours of binary slices, and their filling back onto a pixel grid.

Points are continuous pixel indices ``(row, column)`` = ``(y, x)`` of a (y, x) slice, with pixel
centres on whole numbers. ``mask_to_contours`` traces the 0.5 iso-line of the binary slice
(marching squares), so a contour runs half a pixel outside the centres of the border pixels and
cuts corners diagonally; ``fill_polygons`` takes the pixels whose centres lie inside (even-odd
rule), which gives the original mask back exactly. A contour's area is therefore slightly below
the pixel count (each convex corner cut loses 1/8 pixel, each concave one adds 1/8).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from skimage.draw import polygon as polygon_pixels
from skimage.measure import find_contours


def mask_to_contours(mask_slice: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (outer borders and holes) of a binary (y, x) slice.

    Each contour is an ``(n, 2)`` array of ``(row, column)`` vertices, not repeating the first
    vertex at the end (closure is implied, as in a DICOM CLOSED_PLANAR contour) and without
    collinear vertices. Diagonally touching pixels give separate contours, so filling the
    contours with the even-odd rule restores the mask.
    """
    mask = np.asarray(mask_slice, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {mask.shape}")
    if not mask.any():
        return []
    # A zero border closes contours of regions that touch the slice's edge.
    padded = np.pad(mask, 1).astype(np.float32)
    # fully_connected="low": background is 8-connected, foreground 4-connected, so every contour
    # is a simple polygon and no pixel centre lies on one.
    contours = []
    for traced in find_contours(padded, 0.5, fully_connected="low"):
        points = drop_collinear(traced[:-1] - 1.0)  # find_contours repeats the first point
        if len(points) >= 3:
            contours.append(points)
    return contours


def drop_collinear(points: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """A closed polygon without its vertices that lie on the straight line of their neighbours."""
    points = np.asarray(points, dtype=float)
    if len(points) < 4:
        return points
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    same_way = np.einsum("ij,ij->i", before, after) > 0
    keep = ~((np.abs(cross) <= tol) & same_way)
    return points[keep]


def fill_polygons(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a (y, x) slice whose centres lie inside an odd number of the polygons.

    Each polygon is an ``(n, 2)`` array of continuous ``(row, column)`` indices. Outlines of holes
    drawn inside an outer outline (and islands inside holes) cancel by the even-odd rule, the
    convention of DICOM RT structure sets.
    """
    filled = np.zeros(shape, dtype=bool)
    for points in polygons:
        rows, cols = polygon_pixels(points[:, 0], points[:, 1], shape=shape)
        inside = np.zeros(shape, dtype=bool)
        inside[rows, cols] = True
        filled ^= inside
    return filled


def polygon_area(points: np.ndarray) -> float:
    """Unsigned shoelace area of a closed polygon, in squared index units."""
    y, x = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
