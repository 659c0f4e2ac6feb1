"""Per-patient QA picture for a radiotherapy planner (issue 18): what to look at beside the mask.

One PNG per patient: the planning CT with each region's predicted active-bone-marrow (ABM) contour
on axial, coronal and sagittal planes (top row), the predictive entropy over the same CT planes with
a colour bar in nats (bottom row), and on the right the patient id, the QA verdict in large coloured
text with its reasons, and the per-region statistics.

Choices a reader should know:

* CT window: bone, level 300 / width 1500 HU (-450..1050). The planner judges whether the ABM
  contour stays inside the medullary cavity; a soft-tissue window (e.g. 40/400) saturates cortical
  and trabecular bone alike (both above ~240 HU), so the cortical shell the contour must stay
  within would be invisible. In the bone window marrow (~100 HU) is mid-grey and the cortex white.
* Planes go through the centroid of the predicted marrow (all regions), or through the centre of
  the volume when nothing was predicted; the uncertainty row uses the same planes.
* Pixels are drawn at their physical size (extent in mm), so 3-6 mm slices do not squash the
  coronal and sagittal views.
* Orientation: arrays are (z, y, x) in DICOM patient (LPS) axes with an identity direction, as
  the synthetic phantom (abmseg.synth.grid.Grid.image) and the pipeline's cropped NIfTI files
  have: x towards the patient's left, y posterior, z index 0 the most inferior slice. The axial
  view is radiological (patient right on the image's left, anterior up); coronal and sagittal
  have the head up, sagittal has anterior on the left.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from abmseg.atomic import atomic_path  # noqa: E402
from abmseg.evaluate.planes import (  # noqa: E402
    ORIENTATION_LETTERS,
    image_geometry,
    view_sizes_mm,
)
from abmseg.evaluate.planes import centre_planes as _planes  # noqa: E402
from abmseg.evaluate.planes import contour as _contour  # noqa: E402
from abmseg.evaluate.planes import orientation as _orientation  # noqa: E402
from abmseg.evaluate.planes import region_colour as _region_colour  # noqa: E402
from abmseg.evaluate.planes import scale_bar as _scale_bar  # noqa: E402
from abmseg.evaluate.planes import show as _show  # noqa: E402
from abmseg.evaluate.planes import views as _views  # noqa: E402

CT_LEVEL_WIDTH = (300.0, 1500.0)  # HU: bone window (see the module docstring)
CT_WINDOW = (CT_LEVEL_WIDTH[0] - CT_LEVEL_WIDTH[1] / 2, CT_LEVEL_WIDTH[0] + CT_LEVEL_WIDTH[1] / 2)
ENTROPY_MAX = math.log(4.0)  # nats: four classes (background and three regions)
ENTROPY_SHOWN_FROM = 0.05  # nats: below this the CT shows through untinted
ENTROPY_CMAP = "plasma"
VERDICT_COLOURS = {"pass": "#1a9e1a", "warn": "#ff8c00", "fail": "#e00000"}
FOOTER = "Research use only. Not a medical device."
FIGSIZE = (15.0, 8.0)  # inches
DPI = 100  # the PNG is FIGSIZE * DPI pixels: 1500 x 800
_LINE = 0.025  # figure fraction per line of a reason (9 pt)
_REASONS_BOTTOM = 0.43  # reasons stop above the table
_IMAGE_RIGHT = 0.70  # figure fraction where the image panels end and the text column begins

_STAT_ROWS = [
    ("ABM volume (ml)", "abm_volume_ml", 1.0, "{:.1f}"),
    ("bone interior (ml)", "bone_interior_ml", 1.0, "{:.1f}"),
    ("ABM share of interior (%)", "abm_share_of_interior", 100.0, "{:.0f}"),
    ("mean CT (HU)", "mean_hu", 1.0, "{:.0f}"),
    ("mean sPET (SUV)", "mean_spet_suv", 1.0, "{:.2f}"),
    ("mean entropy (nats)", "mean_entropy", 1.0, "{:.3f}"),
    ("uncertain share (%)", "uncertain_share", 100.0, "{:.1f}"),
]


def _check(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: np.ndarray,
    uncertainty: np.ndarray,
    regions: Mapping[str, int],
    qa: Mapping[str, Any],
) -> tuple[float, float, float]:
    """Refuse inputs that cannot make a truthful picture, before anything is drawn or written."""
    if hu.ndim != 3:
        raise ValueError(f"hu must be a (z, y, x) volume, got shape {hu.shape}")
    for name, array in (("labels", labels), ("uncertainty", uncertainty)):
        if array.shape != hu.shape:
            raise ValueError(f"{name} shape {array.shape} does not match the CT {hu.shape}")
    if min(hu.shape) < 1:
        raise ValueError(f"empty volume {hu.shape}")
    spacing = [float(s) for s in spacing_zyx]
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_zyx must be three positive mm values, got {spacing_zyx}")
    unknown = set(np.unique(labels).tolist()) - {0, *regions.values()}
    if unknown:
        raise ValueError(f"label values {sorted(unknown)} are not in the region table {regions}")
    if qa.get("verdict") not in VERDICT_COLOURS:
        raise ValueError(
            f"QA verdict must be one of {sorted(VERDICT_COLOURS)}: {qa.get('verdict')}"
        )
    return spacing[0], spacing[1], spacing[2]


def _cell(row: Mapping[str, Any] | None, key: str, scale: float, fmt: str) -> str:
    value = None if row is None else row.get(key)
    if value is None:
        return "-"
    value = float(value)
    return fmt.format(value * scale) if math.isfinite(value) else "-"


def _table(axis: Axes, regions: Mapping[str, int], stats: Sequence[Mapping[str, Any]]) -> None:
    """Metrics as rows, regions as columns (three narrow columns fit the text column)."""
    by_name = {str(row.get("region")): row for row in stats}
    ordered = sorted(regions.items(), key=lambda item: item[1])
    header = ["per region", *(textwrap.fill(name.replace("_", " "), 11) for name, _ in ordered)]
    cells = [
        [label, *(_cell(by_name.get(name), key, scale, fmt) for name, _ in ordered)]
        for label, key, scale, fmt in _STAT_ROWS
    ]
    label_width = 0.43
    widths = [label_width] + [(1 - label_width) / len(ordered)] * len(ordered)
    table = axis.table(
        cellText=cells, colLabels=header, colWidths=widths, cellLoc="right", bbox=(0, 0, 1, 1)
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for (r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#bbbbbb")
        cell.set_linewidth(0.5)
        if c == 0:
            cell.get_text().set_horizontalalignment("left")
            cell.PAD = 0.03
        if r == 0:
            cell.get_text().set_fontweight("bold")
            cell.get_text().set_fontsize(7.5)
            cell.get_text().set_horizontalalignment("center" if c else "left")
            if c:
                cell.set_facecolor(_region_colour(ordered[c - 1][1]))
                cell.get_text().set_color("white")
        elif r % 2 == 0:
            cell.set_facecolor("#f2f2f2")


_MARGIN = 0.01  # figure fraction left of the images
_GAP_PX = 10  # between image panels
_HEADING_PX = 30  # a row's heading
_TITLE_PX = 20  # the top row's plane titles
_FOOTER_PX = 40
_LEGEND_X = 0.33  # figure fraction where the region legend starts, right of the CT heading


def _layout(sizes_mm: Sequence[tuple[float, float]]):
    """Axes boxes (figure fractions) of the two image rows and the rows' heading heights.

    One mm-to-pixel scale for all six panels (true relative sizes), the largest that fits the
    image column's width and two rows' height; rows hang from the top, so any spare height is
    left at the bottom rather than between the rows and their headings.
    """
    width_px, height_px = FIGSIZE[0] * DPI, FIGSIZE[1] * DPI
    left_px = _MARGIN * width_px
    room_x = (_IMAGE_RIGHT - 0.05) * width_px - left_px - 2 * _GAP_PX
    room_y = height_px - 2 * _HEADING_PX - _TITLE_PX - _FOOTER_PX - 15
    scale = min(room_x / sum(w for w, _ in sizes_mm), room_y / 2 / max(h for _, h in sizes_mm))
    row_px = max(h for _, h in sizes_mm) * scale
    top_first = height_px - 8 - _HEADING_PX - _TITLE_PX
    top_second = top_first - row_px - _HEADING_PX - 8
    rows = []
    for top in (top_first, top_second):
        boxes, x = [], left_px
        for w, h in sizes_mm:
            boxes.append(
                (
                    x / width_px,
                    (top - h * scale) / height_px,
                    w * scale / width_px,
                    h * scale / height_px,
                )
            )
            x += w * scale + _GAP_PX
        rows.append(boxes)
    headings = ((height_px - 8 - _HEADING_PX + 6) / height_px, (top_second + 6) / height_px)
    return rows[0], rows[1], headings


def _reasons_text(qa: Mapping[str, Any], width: int) -> list[tuple[str, str]]:
    """(wrapped text, colour) per reason, the fails first (they must not be the ones cut off)."""
    reasons = sorted(qa.get("reasons") or [], key=lambda r: r.get("level") != "fail")
    lines = []
    for reason in reasons:
        level = str(reason.get("level", "warn"))
        head = f"{level.upper()} {reason.get('check', '')}: "
        body = textwrap.fill(head + str(reason.get("message", "")), width, subsequent_indent="    ")
        lines.append((body, VERDICT_COLOURS.get(level, "black")))
    return lines


def _patient_text(patient: str) -> tuple[str, int]:
    """The patient line and its font size: smaller for long ids, the middle elided past 40."""
    text = str(patient)
    if len(text) > 40:
        text = f"{text[:19]}\u2026{text[-19:]}"
    return f"Patient {text}", 14 if len(text) <= 26 else 10


def qa_figure(
    path: str | Path,
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: np.ndarray,
    uncertainty: np.ndarray,
    regions: Mapping[str, int],
    stats: Sequence[Mapping[str, Any]],
    qa: Mapping[str, Any],
    patient: str,
) -> None:
    """Write the QA PNG of one patient to ``path`` (atomically; FIGSIZE * DPI pixels).

    ``hu``, ``labels`` (0 background, region values) and ``uncertainty`` (predictive entropy in
    nats) are (z, y, x) on one grid with ``spacing_zyx`` in mm, z index 0 the most inferior slice.
    ``stats`` has one row per region (keys ``region``, ``abm_volume_ml``, ``bone_interior_ml``,
    ``abm_share_of_interior``, ``mean_hu``, ``mean_spet_suv``, ``mean_entropy``,
    ``uncertain_share``; None shows as "-"); ``qa`` is ``{"verdict", "reasons"}``. Raises
    ValueError on inconsistent inputs before anything is written.
    """
    hu = np.asarray(hu)
    labels = np.asarray(labels)
    uncertainty = np.asarray(uncertainty)
    spacing = _check(hu, spacing_zyx, labels, uncertainty, regions, qa)
    planes = _planes(labels)
    geometry = image_geometry(spacing)
    ct_views = _views(hu.astype(np.float32, copy=False), planes)
    label_views = _views(labels, planes)
    entropy = np.nan_to_num(uncertainty.astype(np.float32, copy=False), nan=0.0)
    entropy_views = [
        np.ma.masked_less(view, ENTROPY_SHOWN_FROM) for view in _views(entropy, planes)
    ]

    figure = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white")
    nz, ny, nx = hu.shape
    sizes_mm = view_sizes_mm(hu.shape, spacing)
    top_boxes, bottom_boxes, headings = _layout(sizes_mm)
    z, y, x = planes
    names = [
        f"axial, slice {z + 1}/{nz} from feet",
        f"coronal, {y + 1}/{ny} from front",
        f"sagittal, {x + 1}/{nx} from right",
    ]
    letters = ORIENTATION_LETTERS
    ct_style = {
        "cmap": "gray",
        "vmin": CT_WINDOW[0],
        "vmax": CT_WINDOW[1],
        "interpolation": "nearest",
    }
    shown = None
    ordered = sorted(regions.items(), key=lambda item: item[1])
    for column in range(3):
        row_mm, col_mm, origin = geometry[column]
        top = figure.add_axes(top_boxes[column], facecolor="black")
        bottom = figure.add_axes(bottom_boxes[column], facecolor="black")
        for axis in (top, bottom):
            _show(axis, ct_views[column], row_mm, col_mm, origin, **ct_style)
            axis.set_xticks([])
            axis.set_yticks([])
            _orientation(axis, letters[column])
        for _, value in ordered:
            _contour(
                top,
                label_views[column] == value,
                row_mm,
                col_mm,
                colors=[_region_colour(value)],
                linewidths=1.6,
            )
        shown = bottom.imshow(
            entropy_views[column],
            extent=top.images[0].get_extent(),
            origin=origin,
            aspect="equal",
            cmap=ENTROPY_CMAP,
            vmin=0.0,
            vmax=ENTROPY_MAX,
            alpha=0.85,
            interpolation="nearest",
        )
        # The predicted marrow's outline, thin and neutral, to place the uncertainty.
        _contour(
            bottom, label_views[column] > 0, row_mm, col_mm, colors=["#9fffff"], linewidths=0.6
        )
        _scale_bar(top, *sizes_mm[column], origin)
        top.set_title(names[column], fontsize=10, pad=3)

    heading = {"fontsize": 11, "fontweight": "bold", "va": "bottom"}
    figure.text(_MARGIN, headings[0], "CT (bone window L300/W1500), predicted ABM", **heading)
    if not labels.any():
        figure.text(
            _LEGEND_X,
            headings[0],
            "no ABM predicted: planes through the volume centre",
            color=VERDICT_COLOURS["warn"],
            **heading,
        )
    figure.text(
        _MARGIN,
        headings[1],
        "Predictive entropy over CT, same planes (cyan: predicted ABM outline)",
        **heading,
    )
    # The colour bar spans the bottom row's tallest image, just right of the last one.
    right = max(box[0] + box[2] for box in bottom_boxes)
    y0 = min(box[1] for box in bottom_boxes)
    y1 = max(box[1] + box[3] for box in bottom_boxes)
    bar_axis = figure.add_axes((right + 0.008, y0, 0.009, y1 - y0))
    bar = figure.colorbar(shown, cax=bar_axis)
    bar.set_ticks([0.0, 0.5, 1.0, ENTROPY_MAX])
    bar.set_ticklabels(["0", "0.5", "1.0", "1.39 max"])
    bar.ax.tick_params(labelsize=8)
    bar.ax.set_title("nats", fontsize=9, loc="left", pad=6)

    # Legend of region colours beside the top row's heading (nothing to name when empty).
    x_text = _LEGEND_X
    for name, value in ordered if labels.any() else []:
        figure.text(
            x_text,
            headings[0],
            f"\u2014 {name.replace('_', ' ')}",
            color=_region_colour(value),
            fontsize=10,
            fontweight="bold",
            va="bottom",
        )
        x_text += 0.03 + 0.0065 * len(name)

    # Text column: patient, verdict, reasons, table, footer.
    left = _IMAGE_RIGHT + 0.01
    patient_line, patient_size = _patient_text(patient)
    figure.text(left, 0.955, patient_line, fontsize=patient_size, fontweight="bold", va="top")
    verdict = str(qa["verdict"])
    figure.text(left, 0.905, "QA verdict:", fontsize=12, va="top")
    figure.text(
        left + 0.075,
        0.918,
        verdict.upper(),
        fontsize=30,
        fontweight="bold",
        color=VERDICT_COLOURS[verdict],
        va="top",
    )
    reasons = _reasons_text(qa, width=52)
    if reasons:
        y_text = 0.835
        for shown_count, (text, colour) in enumerate(reasons):
            lines = text.count("\n") + 1
            last = shown_count == len(reasons) - 1
            # Room for this reason, and for the "more" line unless it is the last one.
            if y_text - _LINE * lines - (0 if last else _LINE + 0.008) < _REASONS_BOTTOM:
                more = f"... and {len(reasons) - shown_count} more (see the QA report)"
                figure.text(left, y_text, more, fontsize=9, va="top")
                break
            figure.text(left, y_text, text, fontsize=9, color=colour, va="top")
            y_text -= _LINE * lines + 0.008
    else:
        figure.text(left, 0.835, "No QA checks raised a warning.", fontsize=9, va="top")

    table_axis = figure.add_axes((left, 0.08, 1 - left - 0.015, 0.32))
    table_axis.axis("off")
    _table(table_axis, regions, stats)
    figure.text(
        0.5,
        0.012,
        FOOTER,
        ha="center",
        va="bottom",
        fontsize=10,
        fontstyle="italic",
        color="#444444",
    )

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", facecolor="white")
