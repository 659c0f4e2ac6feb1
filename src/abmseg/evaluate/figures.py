"""Overlay figure for the report: CT, real PET, sPET, and ground truth vs predicted ABM.

One PNG per test patient and variant: rows are the axial, coronal and sagittal planes through
the centre of the true ABM (the centroid of the ground-truth label; the predicted ABM's when the
label is empty, the volume's centre when both are), columns are CT, real PET (SUV), sPET (SUV)
and CT with the predicted ABM regions filled and the true ABM outlined.

The volumes are turned to DICOM patient (LPS) axes before drawing (abmseg.qa.patient.in_lps), so
a feet-first or prone scan looks like a head-first supine one: axial views radiological (patient
right on the viewer's left, anterior up), coronal and sagittal with the head up, sagittal with
anterior on the left; pixels at their physical size. Each row names its plane's position in mm
in DICOM patient coordinates, which the cropped volumes share with the planning CT (cropping
keeps the world origin), and the index of that slice in the converted planning CT.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from abmseg.atomic import atomic_path  # noqa: E402
from abmseg.evaluate.planes import (  # noqa: E402
    ORIENTATION_LETTERS,
    PLANE_NAMES,
    REGION_COLOURS,
    centre_planes,
    contour,
    image_geometry,
    orientation,
    region_colour,
    scale_bar,
    show,
    view_sizes_mm,
    views,
)
from abmseg.io.volume import read_nifti  # noqa: E402
from abmseg.qa.patient import in_lps  # noqa: E402
from abmseg.regions import DEFAULT_REGIONS  # noqa: E402

__all__ = ["REGION_COLOURS", "overlay_figure", "plane_positions"]

CT_WINDOW = (-250.0, 600.0)  # HU: soft tissue and bone both readable (level 175, width 850)
TRUTH_COLOUR = "yellow"
WARN_COLOUR = "#d97000"
WIDTH_PX = 1600
DPI = 100
MAX_HEIGHT_PX = 1500
_MARGIN_PX = 12
_GAP_PX = 14  # between columns
_TITLE_PX = 46  # the figure title
_COLUMN_TITLE_PX = 30
_HEADING_PX = 30  # a row's heading (plane and position)
_ROW_GAP_PX = 10
_BOTTOM_PX = 110  # colour bars and the legend
_WORLD_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # LPS axis constant on each plane
_AXIS_NAME = ("x", "y", "z")
_AXIS_MEANING = ("+ = patient left", "+ = posterior", "+ = superior")


def _read(path: str | Path, made_by: str) -> sitk.Image:
    return read_nifti(path, made_by=made_by)


def _planning_index(planning: sitk.Image, point: tuple[float, ...], world_axis: int) -> int | None:
    """The index, along the planning CT's axis that runs along ``world_axis``, of the voxel
    holding ``point``; None outside the planning CT."""
    index = planning.TransformPhysicalPointToIndex(point)
    direction = np.asarray(planning.GetDirection(), dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[world_axis])))
    inside = all(0 <= i < n for i, n in zip(index, planning.GetSize(), strict=True))
    return int(index[axis]) if inside else None


def plane_positions(
    grid: sitk.Image,
    truth: np.ndarray,
    predicted: np.ndarray,
    planning_ct: sitk.Image | None = None,
) -> dict[str, Any]:
    """Where the three planes go: through the voxel nearest the centroid of the true ABM
    (``truth`` > 0), else of the predicted ABM, else the volume's centre.

    ``truth`` and ``predicted`` are (z, y, x) arrays on ``grid``. Returns ``centre_from``
    ("true ABM", "predicted ABM" or "volume centre"), ``point_mm`` (that voxel's LPS position,
    x, y, z), ``index_zyx`` (on ``grid``) and per plane (``axial``, ``coronal``, ``sagittal``)
    ``axis`` ("z", "y", "x"), ``mm`` (the plane's LPS coordinate) and ``planning_ct_index`` (the
    slice of ``planning_ct`` holding that point, from 0; None without a planning CT or outside).
    """
    if truth.any():
        source, mask = "true ABM", truth > 0
    elif predicted.any():
        source, mask = "predicted ABM", predicted > 0
    else:
        source, mask = "volume centre", np.zeros(truth.shape, bool)
    z, y, x = centre_planes(mask)
    point = grid.TransformIndexToPhysicalPoint((x, y, z))
    positions: dict[str, Any] = {
        "centre_from": source,
        "point_mm": [float(v) for v in point],
        "index_zyx": [z, y, x],
    }
    for plane, axis in _WORLD_AXIS.items():
        positions[plane] = {
            "axis": _AXIS_NAME[axis],
            "mm": float(point[axis]),
            "planning_ct_index": (
                None if planning_ct is None else _planning_index(planning_ct, point, axis)
            ),
        }
    return positions


def _heading(plane: str, position: Mapping[str, Any], with_planning: bool) -> str:
    axis = position["axis"]
    text = f"{plane.capitalize()}: {axis} = {position['mm']:.1f} mm"
    text += f"  ({_AXIS_MEANING[_AXIS_NAME.index(axis)]})"
    if with_planning:
        index = position["planning_ct_index"]
        text += (
            f",  planning CT slice index {index}"
            if index is not None
            else ",  outside the planning CT"
        )
    return text


def _scale_length(width_mm: float) -> float:
    return 100.0 if width_mm >= 400 else 50.0 if width_mm >= 120 else 10.0


def overlay_figure(
    ct_hu: str | Path,
    pet_suv: str | Path,
    spet_suv: str | Path,
    label: str | Path,
    abm: str | Path,
    out_png: str | Path,
    title: str,
    suv_max: float = 6.0,
    planning_ct: str | Path | None = None,
    regions: Mapping[str, int] = DEFAULT_REGIONS,
) -> dict[str, Any]:
    """Write the 3 x 4 panel PNG (about 1600 px wide) of one patient; return where its planes
    are (:func:`plane_positions`). ``planning_ct``: the converted planning CT, for the slice
    indices; ``regions``: region name to label value, for the legend."""
    ct_image = _read(ct_hu, "crop")
    images = [ct_image, _read(pet_suv, "crop"), _read(spet_suv, "infer")]
    images += [_read(label, "crop"), _read(abm, "infer")]
    arrays = [sitk.GetArrayFromImage(image) for image in images]
    for path, array in zip((pet_suv, spet_suv, label, abm), arrays[1:], strict=True):
        if array.shape != arrays[0].shape:
            raise ValueError(f"{path}: shape {array.shape} does not match the CT {arrays[0].shape}")
    planning = None if planning_ct is None else _read(planning_ct, "convert")
    positions = plane_positions(ct_image, arrays[3], arrays[4], planning)

    (ct, pet, spet, truth, predicted), spacing = in_lps(ct_image, *arrays)
    turned = sitk.DICOMOrient(ct_image, "LPS")
    x, y, z = turned.TransformPhysicalPointToIndex(positions["point_mm"])
    planes = (z, y, x)
    geometry = image_geometry(spacing)
    sizes = view_sizes_mm(ct.shape, spacing)

    # One mm-to-pixel scale for every panel: four columns as wide as the widest view.
    slot_mm = max(w for w, _ in sizes)
    room_x = WIDTH_PX - 2 * _MARGIN_PX - 3 * _GAP_PX
    fixed_y = _TITLE_PX + _COLUMN_TITLE_PX + 3 * (_HEADING_PX + _ROW_GAP_PX) + _BOTTOM_PX
    scale = min(room_x / 4 / slot_mm, (MAX_HEIGHT_PX - fixed_y) / sum(h for _, h in sizes))
    height_px = fixed_y + sum(h for _, h in sizes) * scale
    figure = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    slot_px = slot_mm * scale
    lefts = [_MARGIN_PX + c * (slot_px + _GAP_PX) for c in range(4)]

    def box(left_px: float, top_px: float, width_px: float, height: float):
        return (
            left_px / WIDTH_PX,
            1 - (top_px + height) / height_px,
            width_px / WIDTH_PX,
            height / height_px,
        )

    ct_style = {"cmap": "gray", "vmin": CT_WINDOW[0], "vmax": CT_WINDOW[1]}
    pet_style = {"cmap": "magma", "vmin": 0.0, "vmax": suv_max}
    column_titles = [
        f"CT ({CT_WINDOW[0]:.0f} to {CT_WINDOW[1]:.0f} HU)",
        "real PET (SUV)",
        "sPET (SUV)",
        "ABM: predicted (fill), true (outline)",
    ]
    bar_mm = _scale_length(min(w for w, _ in sizes))  # one length for all three planes
    top = _TITLE_PX + _COLUMN_TITLE_PX
    ct_shown = pet_shown = None
    ordered = sorted(regions.items(), key=lambda item: item[1])
    with_planning = planning is not None
    for row, plane in enumerate(PLANE_NAMES):
        figure.text(
            _MARGIN_PX / WIDTH_PX,
            1 - (top + _HEADING_PX - 6) / height_px,
            _heading(plane, positions[plane], with_planning),
            fontsize=13,
            fontweight="bold",
            va="bottom",
        )
        top += _HEADING_PX
        width_mm, row_height_mm = sizes[row]
        row_mm, col_mm, origin = geometry[row]
        panel_w, panel_h = width_mm * scale, row_height_mm * scale
        ct_view, pet_view, spet_view, truth_view, predicted_view = (
            views(volume, planes)[row] for volume in (ct, pet, spet, truth, predicted)
        )
        for column in range(4):
            left = lefts[column] + (slot_px - panel_w) / 2
            axis = figure.add_axes(box(left, top, panel_w, panel_h), facecolor="black")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0 or column == 3:
                ct_shown = show(axis, ct_view, row_mm, col_mm, origin, **ct_style)
            else:
                image = pet_view if column == 1 else spet_view
                pet_shown = show(axis, image, row_mm, col_mm, origin, **pet_style)
            if column == 3:
                fill = np.ma.masked_equal(predicted_view, 0)
                show(
                    axis,
                    fill,
                    row_mm,
                    col_mm,
                    origin,
                    cmap=REGION_COLOURS,
                    vmin=-0.5,
                    vmax=len(REGION_COLOURS.colors) - 0.5,
                    alpha=0.5,
                    interpolation="nearest",
                )
                contour(axis, truth_view > 0, row_mm, col_mm, colors=[TRUTH_COLOUR], linewidths=1.3)
            orientation(axis, ORIENTATION_LETTERS[row], fontsize=11, outline=True)
            if column == 0:
                scale_bar(
                    axis,
                    width_mm,
                    row_height_mm,
                    origin,
                    length_mm=bar_mm,
                    fontsize=10,
                )
        top += panel_h + _ROW_GAP_PX

    for column, name in enumerate(column_titles):
        figure.text(
            (lefts[column] + slot_px / 2) / WIDTH_PX,
            1 - (_TITLE_PX + _COLUMN_TITLE_PX - 6) / height_px,
            name,
            fontsize=12,
            fontweight="bold",
            ha="center",
            va="bottom",
        )
    headline = f"{title}: planes through the centre of the {positions['centre_from']}"
    figure.text(
        0.5,
        1 - 10 / height_px,
        headline,
        fontsize=15,
        fontweight="bold",
        ha="center",
        va="top",
        color="black" if positions["centre_from"] == "true ABM" else WARN_COLOUR,
    )

    # Colour bars (CT in HU; one SUV bar for both PETs) and the legend, under the columns.
    bar_top = top + 22
    bar_h = 16
    ct_bar = figure.add_axes(box(lefts[0] + 0.1 * slot_px, bar_top, 0.8 * slot_px, bar_h))
    figure.colorbar(ct_shown, cax=ct_bar, orientation="horizontal")
    ct_bar.set_xlabel("CT (HU)", fontsize=11)
    suv_width = 2 * slot_px + _GAP_PX
    suv_bar = figure.add_axes(box(lefts[1] + 0.1 * suv_width, bar_top, 0.8 * suv_width, bar_h))
    figure.colorbar(pet_shown, cax=suv_bar, orientation="horizontal", extend="max")
    suv_bar.set_xlabel("real PET and sPET (SUV)", fontsize=11)
    for bar in (ct_bar, suv_bar):
        bar.tick_params(labelsize=10)
    handles = [
        Patch(facecolor=region_colour(value), alpha=0.6, label=name.replace("_", " "))
        for name, value in ordered
    ]
    handles.append(Line2D([], [], color=TRUTH_COLOUR, linewidth=2.5, label="true ABM (outline)"))
    legend = figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=((lefts[3] + slot_px / 2) / WIDTH_PX, 1 - (top + 4) / height_px),
        ncol=2,
        fontsize=11,
        title="predicted ABM region (fill)",
        title_fontsize=11,
        frameon=True,
        facecolor="#555555",
        labelcolor="white",
        edgecolor="#555555",
        handlelength=1.3,
        columnspacing=1.0,
    )
    legend.get_title().set_color("white")
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", facecolor="white")
    return positions
