"""Find one DICOM series in a folder and stack it into a volume with correct world geometry.

Slices are ordered by their position along the slice normal, never by file name or
InstanceNumber. A missing slice or uneven spacing is refused: both common converters silently
write a wrong geometry in that case.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from abmseg.errors import PatientDataError
from abmseg.io.volume import Geometry

# Relative tolerance on slice steps: scanners write positions rounded to ~1e-3 mm.
SPACING_TOLERANCE = 0.01
IGNORED_NAMES = {"DICOMDIR", "Thumbs.db", ".DS_Store"}
SHEET_COLUMN = {"CT": "ct", "PT": "pet"}


@dataclass
class DicomSeries:
    """One series: its datasets sorted along the slice normal, and the stacked geometry."""

    datasets: list[Dataset]
    paths: list[Path]
    geometry: Geometry

    @property
    def modality(self) -> str:
        return str(self.datasets[0].get("Modality", ""))


def list_dicom_files(folder: str | Path) -> list[Path]:
    """Regular, non-hidden files of ``folder`` (sorted for reproducibility, not for slice order)."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in IGNORED_NAMES
    )


def _read(path: Path, patient: str) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise PatientDataError(
            patient,
            path,
            f"not a readable DICOM file ({type(exc).__name__}: {str(exc)[:160]})",
            "remove the file from the series folder or replace it with an intact copy",
        ) from None


def read_series(folder: str | Path, modality: str, patient: str) -> DicomSeries:
    """Read the single ``modality`` series stored in ``folder``.

    Refuses an empty or missing folder, several series mixed in one folder, a series of another
    modality, unreadable files and broken slice geometry, each with a message saying what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PatientDataError(
            patient,
            folder,
            "series folder does not exist",
            "correct the path in the patient sheet",
        )
    files = list_dicom_files(folder)
    if not files:
        raise PatientDataError(
            patient,
            folder,
            f"series folder is empty (no {modality} DICOM files)",
            "copy the patient's DICOM files into this folder or correct the sheet",
        )
    by_series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        ds = _read(path, patient)
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise PatientDataError(
                patient,
                path,
                "DICOM file has no SeriesInstanceUID",
                "export the series again from the PACS or remove this file",
            )
        by_series[uid].append((path, ds))
    if len(by_series) > 1:
        described = "; ".join(
            f"{members[0][1].get('Modality', '?')} series with {len(members)} files "
            f"(e.g. {members[0][0].name})"
            for members in by_series.values()
        )
        raise PatientDataError(
            patient,
            folder,
            f"{len(by_series)} series are mixed in one folder: {described}",
            "keep exactly one series per folder (move the others out) and point the sheet at it",
        )
    members = next(iter(by_series.values()))
    found = str(members[0][1].get("Modality", "")).upper()
    if found != modality.upper():
        raise PatientDataError(
            patient,
            folder,
            f"expected a {modality} series but this folder holds Modality '{found}'",
            f"point the sheet's '{SHEET_COLUMN.get(modality.upper(), modality.lower())}' column at "
            f"the {modality} series folder",
        )
    return _stack(members, patient, folder)


def _vector(ds: Dataset, keyword: str, length: int, path: Path, patient: str) -> np.ndarray:
    value = ds.get(keyword)
    try:
        vec = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        vec = np.array([])
    if vec.shape != (length,) or not np.all(np.isfinite(vec)):
        raise PatientDataError(
            patient,
            path,
            f"tag {keyword} is missing or malformed ({value!r})",
            "export the series again with full geometry tags",
        )
    return vec


def _stack(members: list[tuple[Path, Dataset]], patient: str, folder: Path) -> DicomSeries:
    first_path, first = members[0]
    iop = _vector(first, "ImageOrientationPatient", 6, first_path, patient)
    row_dir, col_dir = iop[:3], iop[3:]
    if not (
        np.isclose(np.linalg.norm(row_dir), 1, atol=1e-3)
        and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-3)
        and abs(float(row_dir @ col_dir)) < 1e-3
    ):
        raise PatientDataError(
            patient,
            first_path,
            f"ImageOrientationPatient {iop.tolist()} is not orthonormal",
            "export the series again; the orientation tag is corrupt",
        )
    normal = np.cross(row_dir, col_dir)
    pixel_spacing = _vector(first, "PixelSpacing", 2, first_path, patient)
    shape = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    if min(pixel_spacing) <= 0 or min(shape) <= 0:
        raise PatientDataError(
            patient,
            first_path,
            f"non-positive PixelSpacing {pixel_spacing.tolist()} or size {shape}",
            "export the series again with valid geometry",
        )

    positions = []
    for path, ds in members:
        if not np.allclose(
            _vector(ds, "ImageOrientationPatient", 6, path, patient), iop, atol=1e-4
        ):
            raise PatientDataError(
                patient,
                path,
                "slice orientation differs from the rest of the series",
                "export a single consistent axial series",
            )
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != shape or not np.allclose(
            _vector(ds, "PixelSpacing", 2, path, patient), pixel_spacing, atol=1e-4
        ):
            raise PatientDataError(
                patient,
                path,
                "slice matrix size or pixel spacing differs from the rest",
                "export a single consistent series (no mixed reconstructions)",
            )
        positions.append(_vector(ds, "ImagePositionPatient", 3, path, patient))

    positions_arr = np.array(positions)
    along = positions_arr @ normal
    order = np.argsort(along, kind="stable")
    members = [members[i] for i in order]
    positions_arr, along = positions_arr[order], along[order]

    if len(members) >= 2:
        steps = np.diff(along)
        if np.any(steps < 1e-3 * float(np.median(np.abs(steps)) or 1.0)) or np.any(steps <= 0):
            dup = members[int(np.argmin(steps)) + 1][0]
            raise PatientDataError(
                patient,
                dup,
                "two slices share the same position (duplicated slice)",
                "remove the duplicate file from the series folder",
            )
        shear = positions_arr[1:] - positions_arr[:-1] - np.outer(steps, normal)
        if np.max(np.abs(shear)) > 1e-2:
            raise PatientDataError(
                patient,
                folder,
                "slice positions are not stacked along the slice normal (gantry tilt or sheared "
                "geometry)",
                "reconstruct the series without gantry tilt, or resample it to an orthogonal grid",
            )
        step = float(np.median(steps))
        uneven = np.abs(steps - step) > SPACING_TOLERANCE * step
        if np.any(uneven):
            k = int(np.argmax(uneven))
            gap, before, after = float(steps[k]), members[k][0], members[k + 1][0]
            kind = "missing slice" if gap > 1.5 * step else "uneven slice spacing"
            raise PatientDataError(
                patient,
                folder,
                f"{kind}: gap of {gap:.3f} mm between {before.name} and {after.name} "
                f"(the series steps {step:.3f} mm)",
                "export the complete series again (every slice, one reconstruction)",
            )
    else:
        step = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)

    direction = np.column_stack([row_dir, col_dir, normal])
    geometry = Geometry(
        size=(shape[1], shape[0], len(members)),
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), step),
        origin=tuple(float(v) for v in positions_arr[0]),
        direction=tuple(float(v) for v in direction.flatten()),
    )
    return DicomSeries(
        datasets=[ds for _, ds in members], paths=[p for p, _ in members], geometry=geometry
    )


def rescaled_pixels(series: DicomSeries, patient: str) -> np.ndarray:
    """Stack slices as float32 (z, y, x) after each slice's own RescaleSlope/Intercept."""
    volume = np.empty(
        (len(series.datasets), series.geometry.size[1], series.geometry.size[0]), dtype=np.float32
    )
    for k, (path, ds) in enumerate(zip(series.paths, series.datasets, strict=True)):
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for broken pixel data
            raise PatientDataError(
                patient,
                path,
                f"pixel data cannot be decoded ({type(exc).__name__}: {exc})"[:300],
                "replace the file with an intact copy",
            ) from None
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        volume[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if not np.all(np.isfinite(volume[k])):
            raise PatientDataError(
                patient,
                path,
                "pixel values are not finite after rescale (NaN or inf)",
                "check RescaleSlope/RescaleIntercept of this file or replace it",
            )
    return volume
