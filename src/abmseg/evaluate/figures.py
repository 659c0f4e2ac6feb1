"""Overlay figure for the report: CT, real PET, sPET, and ground truth vs predicted ABM."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from abmseg.atomic import atomic_path  # noqa: E402
from abmseg.io.volume import read_nifti  # noqa: E402

REGION_COLOURS = ListedColormap(["none", "tab:red", "tab:green", "tab:blue"])


def _array(path: str | Path, made_by: str) -> np.ndarray:
    return sitk.GetArrayFromImage(read_nifti(path, made_by=made_by))


def overlay_figure(
    ct_hu: str | Path,
    pet_suv: str | Path,
    spet_suv: str | Path,
    label: str | Path,
    abm: str | Path,
    out_png: str | Path,
    title: str,
    suv_max: float = 6.0,
) -> int:
    """Write a 1x4 panel PNG at the axial slice with the most ground-truth ABM; return that z."""
    ct, pet, spet = _array(ct_hu, "crop"), _array(pet_suv, "crop"), _array(spet_suv, "infer")
    truth, predicted = _array(label, "crop"), _array(abm, "infer")
    z = int(np.argmax((truth > 0).reshape(truth.shape[0], -1).sum(axis=1)))
    figure, axes = plt.subplots(1, 4, figsize=(14, 4), constrained_layout=True)
    panels = [
        ("CT (HU)", ct[z], {"cmap": "gray", "vmin": -250, "vmax": 600}),
        ("real PET (SUV)", pet[z], {"cmap": "magma", "vmin": 0, "vmax": suv_max}),
        ("sPET (SUV)", spet[z], {"cmap": "magma", "vmin": 0, "vmax": suv_max}),
    ]
    for axis, (name, image, style) in zip(axes[:3], panels, strict=True):
        shown = axis.imshow(image, **style)
        axis.set_title(name)
        figure.colorbar(shown, ax=axis, fraction=0.046)
    axes[3].imshow(ct[z], cmap="gray", vmin=-250, vmax=600)
    axes[3].imshow(
        np.ma.masked_equal(predicted[z], 0),
        cmap=REGION_COLOURS,
        vmin=0,
        vmax=3,
        alpha=0.5,
        interpolation="nearest",
    )
    axes[3].contour(truth[z] > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    axes[3].set_title("ABM: predicted (fill) vs truth (yellow)")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(f"{title}, slice z={z}")
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=80, format="png")
    plt.close(figure)
    return z
