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
    lps_planes,
    orientation,
    panel_layout,
    plane_heading,
    positions_at,
    region_colour,
    scale_bar,
    scale_bar_length,
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


def _read(path: str | Path, made_by: str) -> sitk.Image:
    return read_nifti(path, made_by=made_by)


def plane_positions(
    grid: sitk.Image,
    truth: np.ndarray,
    predicted: np.ndarray,
    planning_ct: sitk.Image | None = None,
) -> dict[str, Any]:
    """Where the three planes go: through the voxel nearest the centroid of the true ABM
    (``truth`` > 0), else of the predicted ABM, else the volume's centre.

    ``truth`` and ``predicted`` are (z, y, x) arrays on ``grid``. Returns ``centre_from``
    ("true ABM", "predicted ABM" or "volume centre") and what
    :func:`abmseg.evaluate.planes.positions_at` gives for that voxel.
    """
    if truth.any():
        source, mask = "true ABM", truth > 0
    elif predicted.any():
        source, mask = "predicted ABM", predicted > 0
    else:
        source, mask = "volume centre", np.zeros(truth.shape, bool)
    return {"centre_from": source, **positions_at(grid, centre_planes(mask), planning_ct)}


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
    planes = lps_planes(ct_image, positions["point_mm"])
    geometry = image_geometry(spacing)
    sizes = view_sizes_mm(ct.shape, spacing)

    # One mm-to-pixel scale for every panel: four columns as wide as the widest view.
    layout = panel_layout(
        sizes,
        4,
        width_px=WIDTH_PX,
        room_x_px=WIDTH_PX - 2 * _MARGIN_PX - 3 * _GAP_PX,
        fixed_y_px=_TITLE_PX + _COLUMN_TITLE_PX + 3 * (_HEADING_PX + _ROW_GAP_PX) + _BOTTOM_PX,
        max_height_px=MAX_HEIGHT_PX,
        margin_px=_MARGIN_PX,
        gap_px=_GAP_PX,
    )
    height_px, box = layout.height_px, layout.box
    scale, slot_px, lefts = layout.scale, layout.slot_px, layout.lefts
    figure = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor="white")

    ct_style = {"cmap": "gray", "vmin": CT_WINDOW[0], "vmax": CT_WINDOW[1]}
    pet_style = {"cmap": "magma", "vmin": 0.0, "vmax": suv_max}
    column_titles = [
        f"CT ({CT_WINDOW[0]:.0f} to {CT_WINDOW[1]:.0f} HU)",
        "real PET (SUV)",
        "sPET (SUV)",
        "ABM: predicted (fill), true (outline)",
    ]
    bar_mm = scale_bar_length(min(w for w, _ in sizes))  # one length for all three planes
    top = _TITLE_PX + _COLUMN_TITLE_PX
    ct_shown = pet_shown = None
    ordered = sorted(regions.items(), key=lambda item: item[1])
    with_planning = planning is not None
    for row, plane in enumerate(PLANE_NAMES):
        heading = plane_heading(plane, positions[plane], with_planning)
        layout.text(figure, _MARGIN_PX, top + _HEADING_PX - 6, heading, fontsize=13)
        top += _HEADING_PX
        width_mm, row_height_mm = sizes[row]
        row_mm, col_mm, origin = geometry[row]
        panel_w, panel_h = width_mm * scale, row_height_mm * scale
        ct_view, pet_view, spet_view, truth_view, predicted_view = (
            views(volume, planes)[row] for volume in (ct, pet, spet, truth, predicted)
        )
        for column in range(4):
            axis = layout.panel(figure, column, top, panel_w, panel_h)
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
        centre = lefts[column] + slot_px / 2
        layout.text(
            figure, centre, _TITLE_PX + _COLUMN_TITLE_PX - 6, name, fontsize=12, ha="center"
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
