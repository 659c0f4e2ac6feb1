"""One patient's raw inputs to NIfTI: CT to HU, PET to SUVbw, label onto the CT grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg import __version__
from abmseg.atomic import write_json
from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import DicomSeries, read_series, rescaled_pixels, uid_digest
from abmseg.io.suv import suv_scale
from abmseg.io.volume import Geometry, image_from_array, read_nifti, write_nifti


@dataclass(frozen=True)
class ConvertedPaths:
    ct: Path
    pet_suv: Path
    label: Path
    meta: Path


def _series_meta(series: DicomSeries) -> dict:
    first = series.datasets[0]
    return {
        "modality": series.modality,
        "n_slices": len(series.datasets),
        "series_uid_sha256_16": uid_digest(str(first.get("SeriesInstanceUID", ""))),
        "frame_of_reference_sha256_16": uid_digest(str(first.get("FrameOfReferenceUID", ""))),
        "manufacturer": str(first.get("Manufacturer", "")),
        "geometry": series.geometry.as_dict(),
    }


def convert_ct(ct_dir: str | Path, patient: str) -> tuple[sitk.Image, dict]:
    """CT series -> HU image (int16 when the rescale gives whole HU, else float32)."""
    series = read_series(ct_dir, "CT", patient)
    return ct_image(series, patient), _series_meta(series)


def ct_image(series: DicomSeries, patient: str) -> sitk.Image:
    """The HU image of a CT series already read (int16 when the rescale gives whole HU)."""
    hu = rescaled_pixels(series, patient)
    integral = np.all(np.mod(hu, 1) == 0) and hu.min() >= -32768 and hu.max() <= 32767
    array = hu.astype(np.int16) if integral else hu
    return image_from_array(array, series.geometry)


def convert_pet(pet_dir: str | Path, patient: str) -> tuple[sitk.Image, dict]:
    """PET series -> SUVbw image (float32) on the PET's own grid."""
    series = read_series(pet_dir, "PT", patient)
    scale = suv_scale(series.datasets, patient, series.paths[0], series.paths)
    suv = rescaled_pixels(series, patient) * np.float32(scale.factor)
    if not np.all(np.isfinite(suv)):
        raise PatientDataError(
            patient,
            pet_dir,
            f"SUV values are not finite (SUV factor {scale.factor:g} from {scale.method})",
            "check the PET's weight, dose and rescale tags against the scanner's dose report",
        )
    meta = _series_meta(series)
    meta["suv"] = scale.as_dict()
    meta["suv_max"] = float(suv.max())
    return image_from_array(suv.astype(np.float32), series.geometry), meta


DEFAULT_REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM Part 10 file (the 'DICM' marker after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


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
    allowed_labels: list[int],
    regions: Mapping[str, int] | None = None,
    roi_aliases: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Convert everything for one patient; outputs appear only when all inputs were valid.

    The label may be a NIfTI image or an RTSTRUCT of the patient's CT; ROI names of an RTSTRUCT
    are matched to ``regions`` (name -> label value) directly or through ``roi_aliases``.
    """
    ct, ct_meta = convert_ct(ct_dir, patient)
    pet, pet_meta = convert_pet(pet_dir, patient)
    rtstruct = {
        "regions": dict(regions or DEFAULT_REGIONS),
        "roi_aliases": roi_aliases,
        "frame_of_reference": ct_meta["frame_of_reference_sha256_16"],
    }
    label, label_meta = label_on_ct_grid(label_path, ct, patient, allowed_labels, rtstruct)
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
