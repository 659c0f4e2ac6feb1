"""Axial, coronal and sagittal views of one synthetic patient (CT, PET, label), to look at.

Slices go through the anatomy that matters: the axial one through the sacroiliac joints (the middle
of the spine region's label), the coronal one through the femoral heads, the sagittal one through
the midline. Pixels are drawn at their true aspect (mm), with a 50 mm scale bar and orientation
letters (R/L, A/P, S/I) as a radiologist reads them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from abmseg.atomic import write_atomic  # noqa: E402

REGION_COLOURS = {1: "#e6194b", 2: "#3cb44b", 3: "#4363d8"}
REGION_LABELS = {1: "lumbosacral spine", 2: "ilium", 3: "lower pelvis"}
CT_WINDOW = (-200.0, 500.0)  # HU: soft tissue and marrow both readable
SUV_RANGE = (0.0, 4.0)


def _centre(mask: np.ndarray) -> np.ndarray:
    """Index centroid (z, y, x) of a mask, or the array centre when empty."""
    hits = np.argwhere(mask)
    return hits.mean(axis=0) if len(hits) else (np.array(mask.shape) - 1) / 2


def view_planes(marrow: np.ndarray) -> tuple[int, int, int]:
    """(axial z, coronal y, sagittal x) indices through the SI joints, hips and midline."""
    spine = _centre(marrow == 1)
    hips = _centre(marrow == 3)
    return int(round(spine[0])), int(round(hips[1])), int(round(spine[2]))


def _panels(volume: np.ndarray, planes: tuple[int, int, int]) -> list[np.ndarray]:
    z, y, x = planes
    # Axial: rows anterior -> posterior, columns patient right -> left (radiological view).
    # Coronal and sagittal: superior at the top.
    return [volume[z], volume[::-1, y, :], volume[::-1, :, x]]


def render_patient(
    hu: np.ndarray,
    suv: np.ndarray,
    label: np.ndarray,
    marrow: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    title: str,
    out: str | Path,
) -> Path:
    """Write a 3 x 3 PNG (rows: CT, PET, CT with ABM label; columns: axial, coronal, sagittal)."""
    planes = view_planes(marrow)
    sx, sy, sz = spacing_xyz
    nz, ny, nx = hu.shape
    extents = [
        (0, nx * sx, ny * sy, 0),
        (0, nx * sx, 0, nz * sz),
        (0, ny * sy, 0, nz * sz),
    ]
    names = ["axial", "coronal", "sagittal"]
    corners = [("R", "L", "A", "P"), ("R", "L", "S", "I"), ("A", "P", "S", "I")]
    cmap = ListedColormap(["none", *REGION_COLOURS.values()])
    fig, axes = plt.subplots(3, 3, figsize=(15, 13), facecolor="black", layout="constrained")
    ct_style = {"cmap": "gray", "vmin": CT_WINDOW[0], "vmax": CT_WINDOW[1]}
    pet_style = {"cmap": "hot", "vmin": SUV_RANGE[0], "vmax": SUV_RANGE[1]}
    rows = [
        ("CT (HU)", _panels(hu, planes), ct_style),
        ("PET (SUVbw)", _panels(suv, planes), pet_style),
        ("CT + ABM label", _panels(hu, planes), ct_style),
    ]
    overlays = _panels(label, planes)
    for r, (row_name, images, style) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            shown = ax.imshow(image, extent=extents[c], interpolation="nearest", **style)
            if r == 2:
                masked = np.ma.masked_equal(overlays[c], 0)
                ax.imshow(masked, extent=extents[c], cmap=cmap, vmin=0, vmax=3, alpha=0.6,
                          interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row_name}, {names[c]}", color="white", fontsize=10)
            left, right, top, bottom = corners[c]
            w, h = abs(extents[c][1] - extents[c][0]), abs(extents[c][2] - extents[c][3])
            for text, pos in ((left, (0.01, 0.5)), (right, (0.97, 0.5)),
                              (top, (0.49, 0.93)), (bottom, (0.49, 0.02))):  # fmt: skip
                ax.text(*pos, text, color="yellow", transform=ax.transAxes, fontsize=9)
            x0, y0 = 0.05 * w, (0.93 if c == 0 else 0.07) * h
            ax.plot([x0, x0 + 50.0], [y0, y0], color="white", linewidth=2)
            ax.text(x0, y0 + (-0.03 if c == 0 else 0.03) * h, "50 mm", color="white", fontsize=8)
        if r < 2:
            bar = fig.colorbar(shown, ax=axes[r, -1], shrink=0.8)
            bar.ax.tick_params(colors="white")
    handles = [Patch(color=REGION_COLOURS[k], label=REGION_LABELS[k]) for k in REGION_COLOURS]
    fig.legend(handles=handles, loc="lower center", ncol=3, facecolor="black", labelcolor="white")
    fig.suptitle(title, color="white")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90, facecolor="black"))
    plt.close(fig)
    return out
