"""Drawing helpers shared by the report's overlay figure and the per-patient QA picture.

Both draw axial, coronal and sagittal planes of (z, y, x) arrays already turned to DICOM patient
(LPS) axes (abmseg.qa.patient.in_lps): x towards the patient's left, y posterior, z index 0 the
most inferior slice. The axial view is radiological (patient right on the image's left, anterior
up); coronal and sagittal have the head up, sagittal has anterior on the left. Pixels are drawn
at their physical size (extent in mm). Plane positions are named in mm in those LPS coordinates,
with the index of the slice in the planning CT that holds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

REGION_COLOURS = ListedColormap(["none", "tab:red", "tab:green", "tab:blue"])
PLANE_NAMES = ("axial", "coronal", "sagittal")
# Per view, the letters at its (left, right, top, bottom) edges.
ORIENTATION_LETTERS = (("R", "L", "A", "P"), ("R", "L", "S", "I"), ("A", "P", "S", "I"))
WORLD_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}  # LPS axis constant on each plane
AXIS_NAMES = ("x", "y", "z")
AXIS_MEANINGS = ("+ = patient left", "+ = posterior", "+ = superior")


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


def slice_index(image: sitk.Image, point: Sequence[float], world_axis: int) -> int | None:
    """The index, along ``image``'s axis that runs along ``world_axis``, of the voxel holding
    ``point``; None outside the image."""
    index = image.TransformPhysicalPointToIndex(tuple(point))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[world_axis])))
    inside = all(0 <= i < n for i, n in zip(index, image.GetSize(), strict=True))
    return int(index[axis]) if inside else None


def positions_at(
    grid: sitk.Image, index_zyx: Sequence[int], planning_ct: sitk.Image | None = None
) -> dict[str, Any]:
    """Where the planes through voxel ``index_zyx`` of ``grid`` lie: ``point_mm`` (its LPS
    position, x, y, z), ``index_zyx`` and per plane ``axis`` ("z", "y", "x"), ``mm`` (the plane's
    LPS coordinate) and ``planning_ct_index`` (the slice of ``planning_ct`` holding the point,
    from 0; None without a planning CT or outside it)."""
    z, y, x = (int(i) for i in index_zyx)
    point = grid.TransformIndexToPhysicalPoint((x, y, z))
    positions: dict[str, Any] = {"point_mm": [float(v) for v in point], "index_zyx": [z, y, x]}
    for plane, axis in WORLD_AXES.items():
        positions[plane] = {
            "axis": AXIS_NAMES[axis],
            "mm": float(point[axis]),
            "planning_ct_index": (
                None if planning_ct is None else slice_index(planning_ct, point, axis)
            ),
        }
    return positions


def plane_heading(plane: str, position: Mapping[str, Any], with_planning: bool) -> str:
    """``Axial: z = 12.0 mm  (+ = superior),  planning CT slice index 2``."""
    axis = position["axis"]
    text = f"{plane.capitalize()}: {axis} = {position['mm']:.1f} mm"
    text += f"  ({AXIS_MEANINGS[AXIS_NAMES.index(axis)]})"
    if with_planning:
        index = position["planning_ct_index"]
        text += (
            f",  planning CT slice index {index}"
            if index is not None
            else ",  outside the planning CT"
        )
    return text


def lps_planes(grid: sitk.Image, point_mm: Sequence[float]) -> tuple[int, int, int]:
    """(z, y, x) of the voxel holding ``point_mm`` in ``grid`` turned to LPS (the arrays
    abmseg.qa.patient.in_lps gives), for :func:`views`."""
    x, y, z = sitk.DICOMOrient(grid, "LPS").TransformPhysicalPointToIndex(tuple(point_mm))
    return z, y, x


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


@dataclass(frozen=True)
class PanelLayout:
    """A figure of image columns over the three plane rows, in pixels from its top left: one
    mm-to-pixel ``scale`` for every panel, each column (``slot_px``) as wide as the widest view."""

    width_px: float
    height_px: float
    scale: float  # px per mm
    slot_px: float
    lefts: list[float]  # each column's left edge

    def box(
        self, left_px: float, top_px: float, width_px: float, height_px: float
    ) -> tuple[float, float, float, float]:
        """A rectangle in pixels from the top left, as ``Figure.add_axes`` wants it."""
        return (
            left_px / self.width_px,
            1 - (top_px + height_px) / self.height_px,
            width_px / self.width_px,
            height_px / self.height_px,
        )

    def panel(
        self, figure: Figure, column: int, top_px: float, width_px: float, height_px: float
    ) -> Axes:
        """Black axes without ticks, ``width_px`` x ``height_px``, centred in ``column``."""
        left = self.lefts[column] + (self.slot_px - width_px) / 2
        axis = figure.add_axes(self.box(left, top_px, width_px, height_px), facecolor="black")
        axis.set_xticks([])
        axis.set_yticks([])
        return axis

    def text(self, figure: Figure, x_px: float, bottom_px: float, text: str, **style) -> None:
        """Bold text whose baseline sits ``bottom_px`` from the top (a heading or a title)."""
        figure.text(
            x_px / self.width_px,
            1 - bottom_px / self.height_px,
            text,
            fontweight="bold",
            va="bottom",
            **style,
        )


def panel_layout(
    sizes_mm: Sequence[tuple[float, float]],
    columns: int,
    *,
    width_px: float,
    room_x_px: float,
    fixed_y_px: float,
    max_height_px: float,
    margin_px: float,
    gap_px: float,
) -> PanelLayout:
    """The layout of ``columns`` columns over views of ``sizes_mm`` (width, height per row) in
    ``room_x_px`` of width, with ``fixed_y_px`` of titles and gaps, at most ``max_height_px``."""
    slot_mm = max(w for w, _ in sizes_mm)
    rows_mm = sum(h for _, h in sizes_mm)
    scale = min(room_x_px / columns / slot_mm, (max_height_px - fixed_y_px) / rows_mm)
    slot_px = slot_mm * scale
    lefts = [margin_px + c * (slot_px + gap_px) for c in range(columns)]
    return PanelLayout(width_px, fixed_y_px + rows_mm * scale, scale, slot_px, lefts)


def scale_bar_length(width_mm: float) -> float:
    """A scale bar's length (mm) for the narrowest view: 10 cm, 50 mm or 10 mm."""
    return 100.0 if width_mm >= 400 else 50.0 if width_mm >= 120 else 10.0


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
