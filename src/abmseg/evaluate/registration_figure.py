"""Per-patient PET-CT registration QC figure: the PET fused on the planning CT before and after
registration, beside the QC figures against their limits.

The results page's table says *whether* a registration passed; this picture lets a reader see
*why*: the same three planes of the CT, once with the PET as acquired (resampled onto the CT
grid with the identity, as the scanner frame puts it) and once with the registered PET, so any
misalignment the registration removed shows as the hot structures moving onto the anatomy.

Choices a reader should know:

* Planes go through the hottest PET region inside the CT body (the connected region of the
  smoothed registered PET above half its peak, holding the peak; usually the bladder, which has
  sharp edges on both scans), else the CT body's centre, else the volume's centre. Both rows use
  the same planes, so only the PET differs between them.
* Views are turned to DICOM patient (LPS) axes (abmseg.evaluate.planes): axial radiological,
  coronal and sagittal head up; pixels at their physical size; the plane positions are in mm and
  as slice indices of the planning CT (the converted CT, whose grid the figure is drawn on).
* The PET is drawn in SUV from 0 to ``SUV_MAX`` over a soft-tissue and bone CT window; below
  ``SUV_SHOWN_FROM`` the CT shows through untinted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from scipy import ndimage  # noqa: E402

from abmseg.atomic import atomic_path  # noqa: E402
from abmseg.evaluate.planes import (  # noqa: E402
    ORIENTATION_LETTERS,
    PLANE_NAMES,
    centre_planes,
    image_geometry,
    lps_planes,
    orientation,
    panel_layout,
    plane_heading,
    positions_at,
    scale_bar,
    scale_bar_length,
    show,
    view_sizes_mm,
    views,
)
from abmseg.io.volume import read_nifti  # noqa: E402
from abmseg.preprocess.registration_qc import QcCheck, QcLimits, qc_checks  # noqa: E402
from abmseg.preprocess.roi import body_mask  # noqa: E402

CT_WINDOW = (-250.0, 600.0)  # HU, as the overlay figure: soft tissue and bone both readable
SUV_MAX = 8.0
SUV_SHOWN_FROM = 0.25
SUV_OPAQUE = 2.0  # the tint grows from clear at SUV_SHOWN_FROM to PET_ALPHA here
PET_ALPHA = 0.75
# "hot" from dark red to yellow (its black start would darken the CT, its white end hide it)
PET_CMAP = ListedColormap(matplotlib.colormaps["hot"](np.linspace(0.2, 0.8, 256))).with_extremes(
    over="#ffff66"
)
HOT_FRACTION = 0.5  # of the smoothed PET's peak: the hottest region's edge
# The results page's .pass / .fail backgrounds, with dark text of the same hue.
FILLS = {True: "#d4edda", False: "#f8d7da"}
INKS = {True: "#155724", False: "#721c24"}
WIDTH_PX = 1600
DPI = 100
MAX_HEIGHT_PX = 1500
_MARGIN_PX = 12
_GAP_PX = 14
_TEXT_PX = 440  # the QC column on the right
_TITLE_PX = 46
_COLUMN_TITLE_PX = 30
_HEADING_PX = 28
_ROW_GAP_PX = 8
_COLUMN_TITLES = (
    "BEFORE: PET as acquired (identity onto the CT)",
    "AFTER: registered PET (rule register)",
)


def pet_on_ct_grid(pet: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """The PET resampled onto the CT grid with the identity transform (linear, 0 outside): where
    the scanner frame alone puts it, before any registration."""
    return sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def hot_centre(hu: np.ndarray, pet: np.ndarray) -> tuple[tuple[int, int, int], str]:
    """(z, y, x) the planes go through and what it is: the centroid of the hottest PET region in
    the CT body, else the body's centre, else the volume's centre (arrays on one grid)."""
    body, _ = body_mask(hu)
    if not body.any():
        return centre_planes(np.zeros(hu.shape, bool)), "volume centre"
    smooth = ndimage.gaussian_filter(np.asarray(pet, np.float32), 1.0)
    smooth[~body] = 0.0
    peak = float(smooth.max())
    if not peak > 0:
        return centre_planes(body), "CT body centre"
    regions, _ = ndimage.label(smooth >= HOT_FRACTION * peak)
    hottest = regions == regions.flat[int(np.argmax(smooth))]
    return centre_planes(hottest), "hottest PET region"


@dataclass(frozen=True)
class FusedPlanes:
    """The three LPS views of the CT and of the PET before and after registration."""

    ct: list[np.ndarray]
    before: list[np.ndarray]
    after: list[np.ndarray]
    spacing: tuple[float, float, float]  # z, y, x mm of the LPS-turned grid
    shape: tuple[int, int, int]
    positions: dict[str, Any]  # centre_from and planes.positions_at's


def fused_planes(ct: sitk.Image, pet: sitk.Image, registered: sitk.Image) -> FusedPlanes:
    """``pet`` (as acquired, on its own grid) and ``registered`` (on the CT grid) cut on the same
    three planes of ``ct`` (HU)."""
    same = ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")
    if any(not np.allclose(getattr(registered, g)(), getattr(ct, g)(), atol=1e-4) for g in same):
        raise ValueError("the registered PET is not on the CT grid")
    # Whole volumes stay SimpleITK images (views, no copies); only the three planes are copied
    # out, so a 512 x 512 x 200 CT fits the rule's 2 GB.
    index, source = hot_centre(
        sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(registered)
    )
    positions = {"centre_from": source, **positions_at(ct, index, planning_ct=ct)}
    planes = lps_planes(ct, positions["point_mm"])
    cut = {}
    for name, image in (("ct", ct), ("before", pet_on_ct_grid(pet, ct)), ("after", registered)):
        turned = sitk.DICOMOrient(image, "LPS")
        cut[name] = [np.array(view) for view in views(sitk.GetArrayViewFromImage(turned), planes)]
    return FusedPlanes(
        **cut,
        spacing=tuple(reversed(turned.GetSpacing())),
        shape=tuple(reversed(turned.GetSize())),
        positions=positions,
    )


def _check_boxes(axis, checks: Sequence[QcCheck], top: float, height: float) -> float:
    """One coloured box per check (name and verdict, the figure, the limit), ``height`` tall in
    axes fractions; returns the y below the last."""
    for check in checks:
        ink = INKS[check.passed]
        axis.add_patch(
            FancyBboxPatch(
                (0.01, top - height + 0.008),
                0.97,
                height - 0.016,
                boxstyle="round,pad=0.0,rounding_size=0.012",
                facecolor=FILLS[check.passed],
                edgecolor=ink,
                transform=axis.transAxes,
            )
        )
        verdict = "PASS" if check.passed else "FAIL"
        axis.text(0.04, top - 0.02, check.name, fontsize=11, fontweight="bold", color=ink, va="top")
        axis.text(
            0.95,
            top - 0.02,
            verdict,
            fontsize=11,
            fontweight="bold",
            color=ink,
            va="top",
            ha="right",
        )
        axis.text(
            0.04,
            top - 0.02 - 0.25 * height,
            f"{check.value}\nlimit: {check.limit}",
            fontsize=10.5,
            color=ink,
            va="top",
            linespacing=1.35,
        )
        top -= height
    return top


def _pet_tint(pet: np.ndarray) -> tuple[np.ma.MaskedArray, np.ndarray]:
    """The PET view masked below SUV_SHOWN_FROM and its per-pixel opacity."""
    alpha = PET_ALPHA * np.clip((pet - SUV_SHOWN_FROM) / (SUV_OPAQUE - SUV_SHOWN_FROM), 0.0, 1.0)
    return np.ma.masked_less(pet, SUV_SHOWN_FROM), alpha.astype(np.float32)


def draw_registration_figure(
    fused: FusedPlanes,
    checks: Sequence[QcCheck],
    out_png: str | Path,
    title: str,
) -> None:
    """Write the PNG (``WIDTH_PX`` wide): before | after on three planes, QC on the right."""
    geometry = image_geometry(fused.spacing)
    sizes = view_sizes_mm(fused.shape, fused.spacing)
    layout = panel_layout(
        sizes,
        2,
        width_px=WIDTH_PX,
        room_x_px=WIDTH_PX - 2 * _MARGIN_PX - 2 * _GAP_PX - _TEXT_PX,
        fixed_y_px=_TITLE_PX + _COLUMN_TITLE_PX + 3 * (_HEADING_PX + _ROW_GAP_PX) + _MARGIN_PX,
        max_height_px=MAX_HEIGHT_PX,
        margin_px=_MARGIN_PX,
        gap_px=_GAP_PX,
    )
    height_px, box = layout.height_px, layout.box
    figure = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor="white")

    ct_style = {"cmap": "gray", "vmin": CT_WINDOW[0], "vmax": CT_WINDOW[1]}
    pet_style = {"cmap": PET_CMAP, "vmin": 0.0, "vmax": SUV_MAX}
    bar_mm = scale_bar_length(min(w for w, _ in sizes))
    top = _TITLE_PX + _COLUMN_TITLE_PX
    ct_shown = pet_shown = None
    for row, plane in enumerate(PLANE_NAMES):
        heading = plane_heading(plane, fused.positions[plane], with_planning=True)
        layout.text(figure, _MARGIN_PX, top + _HEADING_PX - 6, heading, fontsize=12)
        top += _HEADING_PX
        width_mm, row_height_mm = sizes[row]
        row_mm, col_mm, origin = geometry[row]
        panel_w, panel_h = width_mm * layout.scale, row_height_mm * layout.scale
        for column, pet in enumerate((fused.before[row], fused.after[row])):
            axis = layout.panel(figure, column, top, panel_w, panel_h)
            ct_shown = show(axis, fused.ct[row], row_mm, col_mm, origin, **ct_style)
            tint, alpha = _pet_tint(pet)
            pet_shown = show(axis, tint, row_mm, col_mm, origin, alpha=alpha, **pet_style)
            orientation(axis, ORIENTATION_LETTERS[row], fontsize=11, outline=True)
            scale_bar(axis, width_mm, row_height_mm, origin, length_mm=bar_mm, fontsize=10)
        top += panel_h + _ROW_GAP_PX

    for column, name in enumerate(_COLUMN_TITLES):
        centre = layout.lefts[column] + layout.slot_px / 2
        layout.text(
            figure, centre, _TITLE_PX + _COLUMN_TITLE_PX - 6, name, fontsize=12, ha="center"
        )
    passed = all(check.passed for check in checks)
    figure.text(
        0.5,
        1 - 10 / height_px,
        f"{title}: PET-CT registration QC {'PASS' if passed else 'FAIL'}",
        fontsize=15,
        fontweight="bold",
        ha="center",
        va="top",
        color=INKS[passed],
        bbox={"boxstyle": "round,pad=0.3", "facecolor": FILLS[passed], "edgecolor": INKS[passed]},
    )

    text_left = WIDTH_PX - _MARGIN_PX - _TEXT_PX
    text_top = _TITLE_PX + _COLUMN_TITLE_PX
    text_height = height_px - text_top - 150
    panel = figure.add_axes(box(text_left, text_top, _TEXT_PX, text_height))
    panel.axis("off")
    panel.text(
        0.0, 1.0, "QC figures against their limits", fontsize=12, fontweight="bold", va="top"
    )
    below = _check_boxes(panel, checks, 0.955, min(0.11, 0.6 / max(len(checks), 1)))
    where = fused.positions
    note = (
        f"Planes through the {where['centre_from']} at\n"
        f"x, y, z = {', '.join(f'{v:.1f}' for v in where['point_mm'])} mm (LPS).\n"
        "Shift: the CT centre's displacement by the\n"
        "transform; MI: Mattes mutual information\n"
        "CT-PET (higher = better aligned)."
    )
    panel.text(0.0, below - 0.01, note, fontsize=10, va="top", color="#333333", linespacing=1.4)

    bar_w = _TEXT_PX - 40
    ct_bar = figure.add_axes(box(text_left + 20, height_px - 130, bar_w, 14))
    figure.colorbar(ct_shown, cax=ct_bar, orientation="horizontal")
    ct_bar.set_xlabel("CT (HU)", fontsize=10)
    pet_bar = figure.add_axes(box(text_left + 20, height_px - 66, bar_w, 14))
    figure.colorbar(pet_shown, cax=pet_bar, orientation="horizontal", extend="max")
    pet_bar.set_xlabel(
        f"PET (SUV; clear below {SUV_SHOWN_FROM:g}, fading in up to {SUV_OPAQUE:g})", fontsize=10
    )
    for bar in (ct_bar, pet_bar):
        bar.tick_params(labelsize=9)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", facecolor="white")


def registration_figure(
    ct_hu: str | Path,
    pet_suv: str | Path,
    registered_pet: str | Path,
    qc_json: str | Path,
    out_png: str | Path,
    patient: str,
) -> dict[str, Any]:
    """Draw one patient's figure from the converted CT and PET, the registered PET and qc.json
    (its figures against the limits recorded there); return the plane positions and verdicts."""
    ct = read_nifti(ct_hu, patient, made_by="convert")
    pet = read_nifti(pet_suv, patient, made_by="convert")
    registered = read_nifti(registered_pet, patient, made_by="register")
    qc = json.loads(Path(qc_json).read_text())
    checks = qc_checks(qc, QcLimits(**qc["qc_limits"]))
    fused = fused_planes(ct, pet, registered)
    draw_registration_figure(fused, checks, out_png, title=patient)
    return {
        "positions": fused.positions,
        "checks": {check.name: check.passed for check in checks},
    }
