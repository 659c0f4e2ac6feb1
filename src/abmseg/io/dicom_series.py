"""Find one DICOM series in a folder and stack it into a volume with correct world geometry.

Slices are ordered by their position along the slice normal, never by file name or
InstanceNumber. A missing slice or uneven spacing is refused: both common converters silently
write a wrong geometry in that case.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from abmseg.errors import PatientDataError
from abmseg.io.volume import Geometry

# Relative tolerance on slice steps: scanners write positions rounded to ~1e-3 mm.
SPACING_TOLERANCE = 0.01
IGNORED_NAMES = {"DICOMDIR", "Thumbs.db", ".DS_Store"}
SHEET_COLUMN = {"CT": "ct", "PT": "pet"}
# Value representations stored as binary numbers or bytes rather than text.
BINARY_VRS = frozenset(
    ["AT", "FD", "FL", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SQ", "SS", "SV", "UL", "UN"]
    + ["US", "UV"]
)
# Tags that say how stored pixel bytes are laid out: every slice of a series must agree.
PIXEL_FORMAT_TAGS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)


@dataclass
class DicomSeries:
    """One series: its datasets sorted along the slice normal, and the stacked geometry."""

    datasets: list[Dataset]
    paths: list[Path]
    geometry: Geometry

    @property
    def modality(self) -> str:
        return str(self.datasets[0].get("Modality", ""))


def uid_digest(uid: str) -> str:
    """A one-way digest of a UID (sha256, 16 hex): results can be matched to series without
    carrying the UID itself."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


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
    except Exception as exc:  # pydicom raises many types for damaged files
        raise PatientDataError(
            patient,
            path,
            f"not a readable DICOM file ({type(exc).__name__}: {str(exc)[:160]})",
            "remove the file from the series folder or replace it with an intact copy",
        ) from None


def tag_value(ds: Dataset, key: str | BaseTag, path: Path, patient: str, default=None):
    """The value of a tag (``default`` when absent); an element that cannot be trusted is refused.

    pydicom decodes elements lazily, so a damaged value (bad length, garbage in a sequence) only
    fails here. A value stored as binary where the standard says text, or the other way round,
    is refused too: its bytes would be read as some other, plausible-looking number.
    """
    try:
        tag = Tag(key)
        if tag not in ds:
            return default
        element = ds[tag]
        value, vr = element.value, str(element.VR)
    except Exception as exc:  # pydicom raises many types for undecodable values
        raise PatientDataError(
            patient,
            path,
            f"tag {key} cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})",
            "export the series again from the PACS or replace this file with an intact copy",
        ) from None
    standard = dictionary_VR(tag) if dictionary_has_tag(tag) else None
    if standard and _is_binary(vr) != _is_binary(standard):
        raise PatientDataError(
            patient,
            path,
            f"tag {key} is stored with VR {vr} instead of {standard}, so its value cannot be "
            "trusted",
            "export the series again from the scanner or PACS (the file was written wrongly)",
        )
    return value


def _is_binary(vr: str) -> bool:
    return any(v in BINARY_VRS for v in vr.split(" or "))


def as_float(value) -> float | None:
    """A single number from a DICOM value (DS, IS, FD, US or a numeric string); else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def as_int(value) -> int | None:
    """A single whole number from a DICOM value; else None."""
    number = as_float(value)
    if number is None or not np.isfinite(number) or number != int(number):
        return None
    return int(number)


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
        uid = tag_value(ds, "SeriesInstanceUID", path, patient)
        if not isinstance(uid, str) or not uid.strip():
            raise PatientDataError(
                patient,
                path,
                "DICOM file has no SeriesInstanceUID",
                "export the series again from the PACS or remove this file",
            )
        by_series[uid].append((path, ds))
    if len(by_series) > 1:
        described = "; ".join(
            f"{tag_value(members[0][1], 'Modality', members[0][0], patient, '?')} series with "
            f"{len(members)} files (e.g. {members[0][0].name})"
            for members in by_series.values()
        )
        raise PatientDataError(
            patient,
            folder,
            f"{len(by_series)} series are mixed in one folder: {described}",
            "keep exactly one series per folder (move the others out) and point the sheet at it",
        )
    members = next(iter(by_series.values()))
    found = str(tag_value(members[0][1], "Modality", members[0][0], patient, "")).upper()
    if found != modality.upper():
        raise PatientDataError(
            patient,
            folder,
            f"expected a {modality} series but this folder holds Modality '{found}'",
            f"point the sheet's '{SHEET_COLUMN.get(modality.upper(), modality.lower())}' column at "
            f"the {modality} series folder",
        )
    series = _stack(members, patient, folder)
    _check_slice_count(series, patient, folder)
    return series


def _vector(ds: Dataset, keyword: str, length: int, path: Path, patient: str) -> np.ndarray:
    value = tag_value(ds, keyword, path, patient)
    vec = np.array([])
    # A multi-valued element; a plain string would be read character by character.
    if isinstance(value, MultiValue | list | tuple):
        numbers = [as_float(v) for v in value]
        if None not in numbers:
            vec = np.array(numbers, dtype=float)
    if vec.shape != (length,) or not np.all(np.isfinite(vec)):
        raise PatientDataError(
            patient,
            path,
            f"tag {keyword} is missing or malformed ({_short(value)})",
            "export the series again with full geometry tags",
        )
    return vec


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shape(ds: Dataset, path: Path, patient: str) -> tuple[int, int]:
    rows = as_int(tag_value(ds, "Rows", path, patient))
    columns = as_int(tag_value(ds, "Columns", path, patient))
    if rows is None or columns is None or rows <= 0 or columns <= 0:
        raise PatientDataError(
            patient,
            path,
            f"tag Rows or Columns is missing or malformed ({_short(ds.get('Rows'))}, "
            f"{_short(ds.get('Columns'))})",
            "export the series again; the image size tags are corrupt",
        )
    return rows, columns


def _pixel_format(ds: Dataset, path: Path, patient: str) -> tuple:
    return tuple(
        str(tag_value(ds, keyword, path, patient, "missing")) for keyword in PIXEL_FORMAT_TAGS
    )


@dataclass(frozen=True)
class _SliceFrame:
    """What every slice of a series must share with its first slice."""

    iop: np.ndarray
    pixel_spacing: np.ndarray
    shape: tuple[int, int]
    pixel_format: tuple
    modality: str
    first_name: str

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.iop[:3], self.iop[3:])


def _slice_frame(path: Path, ds: Dataset, patient: str) -> _SliceFrame:
    """The first slice's orientation, spacing and pixel format, checked to make sense."""
    iop = _vector(ds, "ImageOrientationPatient", 6, path, patient)
    row_dir, col_dir = iop[:3], iop[3:]
    if not (
        np.isclose(np.linalg.norm(row_dir), 1, atol=1e-3)
        and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-3)
        and abs(float(row_dir @ col_dir)) < 1e-3
    ):
        raise PatientDataError(
            patient,
            path,
            f"ImageOrientationPatient {iop.tolist()} is not orthonormal",
            "export the series again; the orientation tag is corrupt",
        )
    pixel_spacing = _vector(ds, "PixelSpacing", 2, path, patient)
    shape = _shape(ds, path, patient)
    if min(pixel_spacing) <= 0:
        raise PatientDataError(
            patient,
            path,
            f"non-positive PixelSpacing {pixel_spacing.tolist()} or size {shape}",
            "export the series again with valid geometry",
        )
    return _SliceFrame(
        iop=iop,
        pixel_spacing=pixel_spacing,
        shape=shape,
        pixel_format=_pixel_format(ds, path, patient),
        modality=str(tag_value(ds, "Modality", path, patient, "")).upper(),
        first_name=path.name,
    )


def _check_same_frame(path: Path, ds: Dataset, frame: _SliceFrame, patient: str) -> None:
    """One slice against the first: modality, orientation, matrix, spacing, pixel format."""
    found = str(tag_value(ds, "Modality", path, patient, "")).upper()
    if found != frame.modality:
        raise PatientDataError(
            patient,
            path,
            f"Modality '{found}' differs from the series' '{frame.modality}' "
            f"(in {frame.first_name})",
            "export the series again; this file does not belong to it or is corrupt",
        )
    if not np.allclose(
        _vector(ds, "ImageOrientationPatient", 6, path, patient), frame.iop, atol=1e-4
    ):
        raise PatientDataError(
            patient,
            path,
            "slice orientation differs from the rest of the series",
            "export a single consistent axial series",
        )
    if _shape(ds, path, patient) != frame.shape or not np.allclose(
        _vector(ds, "PixelSpacing", 2, path, patient), frame.pixel_spacing, atol=1e-4
    ):
        raise PatientDataError(
            patient,
            path,
            "slice matrix size or pixel spacing differs from the rest",
            "export a single consistent series (no mixed reconstructions)",
        )
    this_format = _pixel_format(ds, path, patient)
    if this_format != frame.pixel_format:
        differing = ", ".join(
            f"{keyword} {mine} here, {theirs} in {frame.first_name}"
            for keyword, mine, theirs in zip(
                PIXEL_FORMAT_TAGS, this_format, frame.pixel_format, strict=True
            )
            if mine != theirs
        )
        raise PatientDataError(
            patient,
            path,
            f"pixel format differs from the rest of the series ({differing})",
            "export the series again; this file does not belong to it or is corrupt",
        )


def _stacking_step(
    paths: list[Path], positions: np.ndarray, normal: np.ndarray, patient: str, folder: Path
) -> float:
    """The slice step of sorted slices: no duplicates, no shear (gantry tilt), no gaps."""
    along = positions @ normal
    steps = np.diff(along)
    if np.any(steps < 1e-3 * float(np.median(np.abs(steps)) or 1.0)) or np.any(steps <= 0):
        raise PatientDataError(
            patient,
            paths[int(np.argmin(steps)) + 1],
            "two slices share the same position (duplicated slice)",
            "remove the duplicate file from the series folder",
        )
    shear = positions[1:] - positions[:-1] - np.outer(steps, normal)
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
        gap, before, after = float(steps[k]), paths[k], paths[k + 1]
        kind = "missing slice" if gap > 1.5 * step else "uneven slice spacing"
        raise PatientDataError(
            patient,
            folder,
            f"{kind}: gap of {gap:.3f} mm between {before.name} and {after.name} "
            f"(the series steps {step:.3f} mm)",
            "export the complete series again (every slice, one reconstruction)",
        )
    return step


def _single_slice_step(path: Path, ds: Dataset, patient: str) -> float:
    """A one-slice series has no neighbour: its thickness tags give the step."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = as_float(tag_value(ds, keyword, path, patient))
        if value is not None and np.isfinite(value) and value > 0:
            return value
    raise PatientDataError(
        patient,
        path,
        "a single-slice series without a usable SliceThickness/SpacingBetweenSlices",
        "export the complete series (every slice)",
    )


def _stack(members: list[tuple[Path, Dataset]], patient: str, folder: Path) -> DicomSeries:
    """The slices as one volume: each checked against the first, sorted along the normal."""
    first_path, first = members[0]
    frame = _slice_frame(first_path, first, patient)
    positions = []
    for path, ds in members:
        _check_same_frame(path, ds, frame, patient)
        positions.append(_vector(ds, "ImagePositionPatient", 3, path, patient))
    positions_arr = np.array(positions)
    order = np.argsort(positions_arr @ frame.normal, kind="stable")
    members = [members[i] for i in order]
    positions_arr = positions_arr[order]
    if len(members) >= 2:
        paths = [path for path, _ in members]
        step = _stacking_step(paths, positions_arr, frame.normal, patient, folder)
    else:
        step = _single_slice_step(first_path, first, patient)
    shape, pixel_spacing = frame.shape, frame.pixel_spacing
    direction = np.column_stack([frame.iop[:3], frame.iop[3:], frame.normal])
    geometry = Geometry(
        size=(shape[1], shape[0], len(members)),
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), step),
        origin=tuple(float(v) for v in positions_arr[0]),
        direction=tuple(float(v) for v in direction.flatten()),
    )
    return DicomSeries(
        datasets=[ds for _, ds in members], paths=[p for p, _ in members], geometry=geometry
    )


def _check_slice_count(series: DicomSeries, patient: str, folder: Path) -> None:
    """PET slices carry NumberOfSlices: fewer files mean lost end slices that geometry can't see."""
    if series.modality.upper() != "PT":
        return
    for path, ds in zip(series.paths, series.datasets, strict=True):
        expected = as_int(tag_value(ds, "NumberOfSlices", path, patient))
        if expected is not None and expected != len(series.datasets):
            raise PatientDataError(
                patient,
                folder,
                f"the folder holds {len(series.datasets)} slices but NumberOfSlices is "
                f"{expected} in {path.name} (slices missing or extra)",
                "export the complete PET series again (every slice, one reconstruction)",
            )


def _rescale(ds: Dataset, keyword: str, path: Path, patient: str) -> float:
    """RescaleSlope/RescaleIntercept: Type 1 in the CT and PET image modules, so never defaulted."""
    value = tag_value(ds, keyword, path, patient)
    number = as_float(value)
    if number is None or not np.isfinite(number) or (keyword == "RescaleSlope" and number <= 0):
        wanted = "a positive number" if keyword == "RescaleSlope" else "a finite number"
        state = "missing" if value is None else f"not {wanted} ({_short(value)})"
        raise PatientDataError(
            patient,
            path,
            f"tag {keyword} is {state}; stored pixel values cannot be rescaled without it",
            "export the series again from the scanner or PACS with its rescale tags",
        )
    return number


def _pixel_bytes_check(ds: Dataset, path: Path, patient: str, shape: tuple[int, int]) -> None:
    """Native (uncompressed) pixel data must hold exactly Rows x Columns samples."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        compressed = syntax is None or syntax.is_compressed
    except ValueError:  # not a transfer syntax UID at all
        raise PatientDataError(
            patient,
            path,
            f"unknown TransferSyntaxUID {_short(str(syntax))}: the pixel data cannot be decoded",
            "export the series again with a standard transfer syntax (e.g. explicit VR little "
            "endian)",
        ) from None
    if compressed:
        return
    data = tag_value(ds, "PixelData", path, patient)
    if not isinstance(data, bytes) or not data:
        raise PatientDataError(
            patient,
            path,
            "the file has no pixel data",
            "replace the file with an intact copy",
        )
    bits = as_int(tag_value(ds, "BitsAllocated", path, patient))
    samples = as_int(tag_value(ds, "SamplesPerPixel", path, patient, 1))
    if bits is None or bits <= 0 or bits % 8 or samples != 1:
        raise PatientDataError(
            patient,
            path,
            f"pixel format tags are missing or malformed (BitsAllocated "
            f"{_short(ds.get('BitsAllocated'))}, SamplesPerPixel {_short(samples)})",
            "export the series again; CT and PET slices are single-sample grey images",
        )
    expected = shape[0] * shape[1] * bits // 8
    if len(data) not in (expected, expected + expected % 2):
        raise PatientDataError(
            patient,
            path,
            f"pixel data holds {len(data)} bytes, but Rows x Columns x BitsAllocated "
            f"({shape[0]} x {shape[1]} x {bits} bits) needs {expected}: truncated file or "
            "wrong image size tags",
            "replace the file with an intact copy",
        )


def rescaled_pixels(series: DicomSeries, patient: str) -> np.ndarray:
    """Stack slices as float32 (z, y, x) after each slice's own RescaleSlope/Intercept."""
    shape = (series.geometry.size[1], series.geometry.size[0])
    volume = np.empty((len(series.datasets), *shape), dtype=np.float32)
    for k, (path, ds) in enumerate(zip(series.paths, series.datasets, strict=True)):
        slope = _rescale(ds, "RescaleSlope", path, patient)
        intercept = _rescale(ds, "RescaleIntercept", path, patient)
        _pixel_bytes_check(ds, path, patient, shape)
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for broken pixel data
            raise PatientDataError(
                patient,
                path,
                f"pixel data cannot be decoded ({type(exc).__name__}: {exc})"[:300],
                "replace the file with an intact copy",
            ) from None
        if pixels.shape != shape or pixels.dtype.kind not in "iu":
            raise PatientDataError(
                patient,
                path,
                f"pixel data decodes to a {pixels.dtype} array of shape {pixels.shape}, not one "
                f"grey {shape[0]} x {shape[1]} integer image",
                "export the series as single-frame greyscale slices",
            )
        with np.errstate(over="ignore", invalid="ignore"):
            volume[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if not np.all(np.isfinite(volume[k])):
            raise PatientDataError(
                patient,
                path,
                "pixel values are not finite after rescale (NaN or inf)",
                "check RescaleSlope/RescaleIntercept of this file or replace it",
            )
    return volume
