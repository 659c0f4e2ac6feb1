"""Drawing helpers shared by the report's overlay figure and the per-patient QA picture.

Both draw axial, coronal and sagittal planes of (z, y, x) arrays already turned to DICOM patient
(LPS) axes (abmseg.qa.patient.in_lps): x towards the patient's left, y posterior, z index 0 the
most inferior slice. The axial view is radiological (patient right on the image's left, anterior
up); coronal and sagittal have the head up, sagittal has anterior on the left. Pixels are drawn
at their physical size (extent in mm).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

REGION_COLOURS = ListedColormap(["none", "tab:red", "tab:green", "tab:blue"])
PLANE_NAMES = ("axial", "coronal", "sagittal")
# Per view, the letters at its (left, right, top, bottom) edges.
ORIENTATION_LETTERS = (("R", "L", "A", "P"), ("R", "L", "S", "I"), ("A", "P", "S", "I"))


def region_colour(value: int) -> Any:
    """The colour of a region's label value (white for a value without one)."""
    colours = REGION_COLOURS.colors
    return colours[value] if 0 < value < len(colours) else "white"


def centre_planes(labels: np.ndarray) -> tuple[int, int, int]:
    """(z, y, x) indices through the centroid of ``labels > 0``, or the volume's centre."""
    hits = np.nonzero(labels)
    if len(hits[0]):
        centre = [float(axis.mean()) for axis in hits]
    else:
        centre = [(n - 1) / 2 for n in labels.shape]
    return int(round(centre[0])), int(round(centre[1])), int(round(centre[2]))


def views(volume: np.ndarray, planes: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial (rows y, cols x), coronal (rows z, cols x), sagittal (rows z, cols y)."""
    z, y, x = planes
    return [volume[z], volume[:, y, :], volume[:, :, x]]


def image_geometry(spacing: tuple[float, float, float]) -> list[tuple[float, float, str]]:
    """Per view: (row mm, column mm, imshow origin). Axial row 0 (anterior) at the top;
    coronal and sagittal row 0 (z index 0, inferior) at the bottom, so the head is up."""
    sz, sy, sx = spacing
    return [(sy, sx, "upper"), (sz, sx, "lower"), (sz, sy, "lower")]


def view_sizes_mm(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> list[tuple[float, float]]:
    """(width mm, height mm) of the axial, coronal and sagittal views of a (z, y, x) volume."""
    nz, ny, nx = shape
    sz, sy, sx = spacing
    return [(nx * sx, ny * sy), (nx * sx, nz * sz), (ny * sy, nz * sz)]


def show(axis: Axes, image: np.ndarray, row_mm: float, col_mm: float, origin: str, **style):
    """``image`` at its physical size in mm (0 at the first row and column's outer edge)."""
    height, width = image.shape[0] * row_mm, image.shape[1] * col_mm
    extent = (0, width, height, 0) if origin == "upper" else (0, width, 0, height)
    shown = axis.imshow(image, extent=extent, origin=origin, aspect="equal", **style)
    axis.set_xlim(0, width)
    axis.set_ylim(*((height, 0) if origin == "upper" else (0, height)))
    return shown


def contour(axis: Axes, mask: np.ndarray, row_mm: float, col_mm: float, **style) -> None:
    """The outline of ``mask`` on a view drawn by :func:`show` (nothing when empty or full)."""
    if mask.any() and not mask.all():
        rows = (np.arange(mask.shape[0]) + 0.5) * row_mm
        cols = (np.arange(mask.shape[1]) + 0.5) * col_mm
        axis.contour(cols, rows, mask.astype(np.float32), levels=[0.5], **style)


def orientation(
    axis: Axes, letters: tuple[str, str, str, str], fontsize: float = 9, outline: bool = False
) -> None:
    """Orientation letters at the (left, right, top, bottom) edges of a view (``outline``: with
    a dark edge, readable over bright anatomy)."""
    left, right, top, bottom = letters
    style: dict[str, Any] = {
        "color": "#ffd24d",
        "fontsize": fontsize,
        "fontweight": "bold",
        "transform": axis.transAxes,
    }
    if outline:
        style["path_effects"] = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    axis.text(0.02, 0.5, left, ha="left", va="center", **style)
    axis.text(0.98, 0.5, right, ha="right", va="center", **style)
    axis.text(0.5, 0.98, top, ha="center", va="top", **style)
    axis.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def scale_bar(
    axis: Axes,
    width_mm: float,
    height_mm: float,
    origin: str,
    length_mm: float = 50.0,
    fontsize: float = 7,
) -> None:
    """A ``length_mm`` bar with its length above it in the lower left corner of a view."""
    x0 = 0.05 * width_mm
    y = 0.95 * height_mm if origin == "upper" else 0.05 * height_mm
    axis.plot([x0, x0 + length_mm], [y, y], color="white", linewidth=2, solid_capstyle="butt")
    up = -1 if origin == "upper" else 1
    label = f"{length_mm / 10:g} cm" if length_mm >= 100 else f"{length_mm:g} mm"
    axis.text(
        x0 + length_mm / 2,
        y + up * 0.015 * height_mm,
        label,
        color="white",
        fontsize=fontsize,
        ha="center",
        va="bottom",
    )
