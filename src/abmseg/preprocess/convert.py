"""The convert stage: one patient's CT to HU, PET to SUVbw and label onto the CT grid, as NIfTI.

The label may be a NIfTI image or an RTSTRUCT of the patient's CT; ROI names of an RTSTRUCT are
matched to the region table directly or through the configured aliases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg import __version__
from abmseg.atomic import write_json
from abmseg.errors import PatientDataError
from abmseg.io.convert import convert_ct, convert_pet, is_dicom_file
from abmseg.io.volume import Geometry, read_nifti, write_nifti
from abmseg.regions import DEFAULT_REGIONS, DEFAULT_ROI_ALIASES, label_values
from abmseg.settings import pick


@dataclass(frozen=True)
class ConvertSettings:
    """The region table (name -> label value) and RTSTRUCT ROI aliases of config/config.yaml."""

    regions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    roi_aliases: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROI_ALIASES.items()}
    )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConvertSettings:
        return cls(**pick(config, "regions", "roi_aliases"))

    @property
    def allowed_labels(self) -> list[int]:
        return label_values(self.regions)


@dataclass(frozen=True)
class ConvertedPaths:
    ct: Path
    pet_suv: Path
    label: Path
    meta: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> ConvertedPaths:
        folder = Path(folder)
        names = ("ct.nii.gz", "pet_suv.nii.gz", "label.nii.gz", "meta.json")
        return cls(*(folder / name for name in names))


def rtstruct_on_ct_grid(
    label_path: str | Path,
    ct: sitk.Image,
    patient: str,
    regions: Mapping[str, int],
    roi_aliases: Mapping[str, Sequence[str]] | None,
    frame_of_reference: str,
) -> tuple[sitk.Image, dict]:
    """Fill an RTSTRUCT's region ROIs onto the CT grid; the meta names the ROIs used (ROI names
    of other structures are only counted: they are free text)."""
    from abmseg.rt.rtstruct import load_rtstruct  # pydicom-heavy, only for RTSTRUCT labels

    loaded = load_rtstruct(
        label_path, ct, patient, regions, roi_aliases, frame_of_reference=frame_of_reference
    )
    missing = sorted(set(regions) - set(loaded.matched))
    if missing:
        raise PatientDataError(
            patient,
            label_path,
            f"the RTSTRUCT has no ROI for region(s) {missing} (ROIs that match no region: "
            f"{loaded.ignored})",
            "name the ROI after the region or add its name to roi_aliases in the config",
        )
    return loaded.image, {
        "source": "rtstruct",
        "rois": {region: loaded.matched[region] for region in sorted(loaded.matched)},
        "other_rois_ignored": len(loaded.ignored),
        "overlap_voxels": loaded.overlap_voxels,
    }


def label_on_ct_grid(
    label_path: str | Path,
    ct: sitk.Image,
    patient: str,
    allowed_labels: list[int],
    rtstruct: dict | None = None,
) -> tuple[sitk.Image, dict]:
    """Read the label (NIfTI, or an RTSTRUCT when ``rtstruct`` gives its regions, aliases and
    the CT's frame of reference) and place it on the CT grid (nearest neighbour when grids
    differ)."""
    source: dict = {"source": "nifti"}
    if is_dicom_file(label_path):
        if rtstruct is None:
            raise PatientDataError(
                patient,
                label_path,
                "the label is a DICOM file but no region table was given to read it as RTSTRUCT",
                "pass the regions and ROI aliases (the pipeline does) or give a NIfTI label",
            )
        label, source = rtstruct_on_ct_grid(label_path, ct, patient, **rtstruct)
    else:
        label = read_nifti(label_path, patient)
    array = sitk.GetArrayViewFromImage(label)
    if not np.all(np.isfinite(array)) or np.any(np.mod(array, 1) != 0):
        raise PatientDataError(
            patient,
            label_path,
            "label image holds non-integer values",
            "save the label as an integer image (0 background, 1..3 regions)",
        )
    unknown = sorted(set(np.unique(array).astype(int).tolist()) - set(allowed_labels))
    if unknown:
        raise PatientDataError(
            patient,
            label_path,
            f"label values {unknown} are not in the region table {allowed_labels}",
            "relabel the image to the configured region values",
        )
    resampled = not Geometry.of(label).matches(Geometry.of(ct))
    if resampled:
        label = sitk.Resample(
            label, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID()
        )
    label = sitk.Cast(label, sitk.sitkUInt8)
    counts = np.bincount(
        sitk.GetArrayViewFromImage(label).ravel(), minlength=max(allowed_labels) + 1
    )
    if counts[1:].sum() == 0:
        raise PatientDataError(
            patient,
            label_path,
            "label is empty on the CT grid (no region voxels overlap the CT)",
            "check that the label belongs to this patient's CT (same frame of reference)",
        )
    return label, {
        **source,
        "resampled_to_ct_grid": resampled,
        "voxels_per_label": {str(k): int(counts[k]) for k in allowed_labels},
    }


def convert_patient(
    patient: str,
    ct_dir: str | Path,
    pet_dir: str | Path,
    label_path: str | Path,
    out: ConvertedPaths,
    settings: ConvertSettings | None = None,
) -> dict:
    """Convert everything for one patient; outputs appear only when all inputs were valid."""
    settings = settings or ConvertSettings()
    ct, ct_meta = convert_ct(ct_dir, patient)
    pet, pet_meta = convert_pet(pet_dir, patient)
    rtstruct = {
        "regions": dict(settings.regions),
        "roi_aliases": settings.roi_aliases,
        "frame_of_reference": ct_meta["frame_of_reference_sha256_16"],
    }
    label, label_meta = label_on_ct_grid(label_path, ct, patient, settings.allowed_labels, rtstruct)
    meta = {
        "patient_id": patient,
        "abmseg_version": __version__,
        "ct": ct_meta,
        "pet": pet_meta,
        "label": label_meta,
        "units": {"ct": "HU", "pet": "SUVbw (g/ml)", "label": "region index"},
    }
    write_nifti(ct, out.ct)
    write_nifti(pet, out.pet_suv)
    write_nifti(label, out.label)
    write_json(out.meta, meta)
    return meta
