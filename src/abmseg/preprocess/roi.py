"""The crop stage: Otsu body mask, scanner bed removal and the pelvic ROI box, found on the CT
and applied alike to every image of the patient.

``crop_volumes`` is the in-memory core; ``crop_patient`` (rule crop, ``abmseg crop``) wraps it
with files, and CT-only prediction (abmseg.infer.ct_only) calls it on the CT alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from abmseg.atomic import write_json
from abmseg.errors import PatientDataError
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.settings import from_section

AIR_HU = -1000.0
# Fewer voxels above Otsu's threshold than this is no body at all (a blank or phantom-less scan).
MIN_BODY_VOXELS = 1000
INDEX_CONVENTION = "half-open [start, stop) voxel index ranges on the converted CT grid"


@dataclass(frozen=True)
class CropSettings:
    """config['crop']."""

    margin_mm: tuple[float, float, float] = (10.0, 10.0, 0.0)  # x, y, z
    clear_outside_body: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CropSettings:
        return from_section(cls, config.get("crop"), "crop")


def body_mask(hu: np.ndarray) -> tuple[np.ndarray, float]:
    """Largest connected component above Otsu's threshold, holes filled slice by slice.

    The scanner bed is separated from the body by air, so it is a different component and
    drops out; bowel gas inside the body is filled back in.
    """
    clipped = np.clip(hu, -1024, 2000)
    threshold = float(threshold_otsu(clipped[:: max(1, hu.shape[0] // 32)]))
    foreground = clipped > threshold
    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.zeros_like(foreground), threshold
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask, threshold


def read_roi_box(roi_json: str | Path, patient: str) -> dict[str, list[int]]:
    """The crop box (CT index ranges) from the crop rule's roi.json."""
    box = read_json(roi_json, patient, made_by="crop", keys=("box_ct_index",))["box_ct_index"]
    if not isinstance(box, dict) or any(
        not isinstance(box.get(axis), list) or len(box[axis]) != 2 for axis in "xyz"
    ):
        raise PatientDataError(
            patient,
            roi_json,
            f"box_ct_index is not an x/y/z box of [start, stop] pairs: {box!r}"[:300],
            "delete it and rerun the rule 'crop' that makes it",
        )
    return box


def box_slices(
    box: Mapping[str, list[int]], shape_zyx: tuple[int, ...] | None = None
) -> tuple[slice, slice, slice]:
    """The (z, y, x) slices of a ROI box (half-open CT index ranges per axis); with
    ``shape_zyx``, checked against the shape of a map on the cropped grid."""
    (x0, x1), (y0, y1), (z0, z1) = box["x"], box["y"], box["z"]
    if shape_zyx is not None and tuple(shape_zyx) != (z1 - z0, y1 - y0, x1 - x0):
        raise ValueError(f"map shape {tuple(shape_zyx)} does not match the ROI box {box}")
    return slice(z0, z1), slice(y0, y1), slice(x0, x1)


def roi_box(
    mask: np.ndarray, spacing_xyz: tuple[float, float, float], margin_mm: tuple[float, float, float]
) -> dict[str, list[int]]:
    """Bounding box of ``mask`` grown by ``margin_mm``, as half-open index ranges per axis."""
    box = {}
    for axis_name, array_axis, spacing, margin in zip(
        "xyz", (2, 1, 0), spacing_xyz, margin_mm, strict=True
    ):
        other = tuple(a for a in range(3) if a != array_axis)
        present = np.flatnonzero(mask.any(axis=other))
        grow = int(np.ceil(margin / spacing))
        lo = max(0, int(present[0]) - grow)
        hi = min(mask.shape[array_axis], int(present[-1]) + 1 + grow)
        box[axis_name] = [lo, hi]
    return box


def body_box(
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    settings: CropSettings,
    patient: str | None,
    ct_path: str | Path,
) -> tuple[np.ndarray, float, dict[str, list[int]]]:
    """Body mask, its Otsu threshold and the ROI box of a CT in HU; refuses a CT without body.

    From the CT alone, so patients without PET (CT-only prediction) are cropped the same way."""
    mask, threshold = body_mask(hu)
    if mask.sum() < MIN_BODY_VOXELS:
        raise PatientDataError(
            patient,
            ct_path,
            f"no body found in the CT (Otsu threshold {threshold:.0f} HU)",
            "check that the CT series is a patient scan in HU",
        )
    return mask, threshold, roi_box(mask, spacing_xyz, settings.margin_mm)


def crop_image(image: sitk.Image, box: dict[str, list[int]]) -> sitk.Image:
    """Cut the box out of an image; SimpleITK slicing keeps the world geometry exact."""
    (x0, x1), (y0, y1), (z0, z1) = box["x"], box["y"], box["z"]
    return image[x0:x1, y0:y1, z0:z1]


@dataclass(frozen=True)
class Cropped:
    """The crop core's result: every image cut to the box (bed cleared), and how it was found."""

    images: dict[str, sitk.Image]
    box: dict[str, list[int]]
    otsu_threshold_hu: float
    body_voxels: int

    def summary(self, patient: str | None, ct: sitk.Image) -> dict[str, Any]:
        """The ROI record shared by roi.json (rule crop) and prediction.json (CT-only)."""
        return {
            "patient_id": patient,
            "box_ct_index": self.box,
            "index_convention": INDEX_CONVENTION,
            "ct_size_xyz": list(ct.GetSize()),
            "cropped_size_xyz": list(self.images["ct"].GetSize()),
            "otsu_threshold_hu": round(self.otsu_threshold_hu, 2),
            "body_voxels": self.body_voxels,
        }


def crop_volumes(
    ct: sitk.Image,
    settings: CropSettings,
    pet: sitk.Image | None = None,
    label: sitk.Image | None = None,
    patient: str | None = None,
    ct_path: str | Path = "the CT",
) -> Cropped:
    """The crop core: the body and its box from the CT (in HU) alone; CT and PET (when given)
    cleared outside the body as the settings say, then every image cut to the box."""
    hu = sitk.GetArrayFromImage(ct)
    mask, threshold, box = body_box(hu, ct.GetSpacing(), settings, patient, ct_path)
    arrays = {"ct": (hu, ct, AIR_HU)}
    if pet is not None:
        arrays["pet"] = (sitk.GetArrayFromImage(pet), pet, 0)
    images = {}
    for name, (array, source, fill) in arrays.items():
        if settings.clear_outside_body:
            array = np.where(mask, array, np.asarray(fill, dtype=array.dtype))
        images[name] = crop_image(image_like(array, source), box)
    if label is not None:
        images["label"] = crop_image(label, box)
    return Cropped(images, box, threshold, int(mask.sum()))


def crop_patient(
    ct_path: str | Path,
    pet_path: str | Path,
    label_path: str | Path,
    out_ct: str | Path,
    out_pet: str | Path,
    out_label: str | Path,
    out_roi: str | Path,
    settings: CropSettings,
    patient: str | None = None,
) -> dict:
    """Crop CT, registered PET and label to the same pelvic box; clear the bed outside the body."""
    ct = read_nifti(ct_path, patient, made_by="convert")
    pet = read_nifti(pet_path, patient, made_by="register")
    label = read_nifti(label_path, patient, made_by="convert")
    for name, other in (("registered PET", pet), ("label", label)):
        if other.GetSize() != ct.GetSize():
            raise PatientDataError(
                patient,
                pet_path if name.endswith("PET") else label_path,
                f"{name} is not on the CT grid ({other.GetSize()} vs {ct.GetSize()})",
                "delete the registered and converted outputs of this patient and rerun",
            )
    cropped = crop_volumes(ct, settings, pet, label, patient, ct_path)
    lost = int(np.count_nonzero(sitk.GetArrayViewFromImage(label))) - int(
        np.count_nonzero(sitk.GetArrayViewFromImage(cropped.images["label"]))
    )
    roi = {
        **cropped.summary(patient, ct),
        "label_voxels_outside_box": lost,
        "margin_mm": list(settings.margin_mm),
        "cleared_outside_body": settings.clear_outside_body,
    }
    write_nifti(cropped.images["ct"], out_ct)
    write_nifti(cropped.images["pet"], out_pet)
    write_nifti(cropped.images["label"], out_label)
    write_json(out_roi, roi)
    return roi
