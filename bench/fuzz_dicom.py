"""Fuzz the DICOM reader: mutate a valid synthetic patient's CT and PET series and convert them.

Every mutation must end in either the unmutated result (voxel-equal volume on an equal grid) or
a clear PatientDataError (naming the patient, the series folder or file, and a fix). Anything
else is a failure: another exception is a crash, a different volume is a silently wrong result.
Operators only make changes whose correct outcome is one of those two: they never write a
different but valid value (such as another RescaleIntercept), which no reader could detect.

Usage: python bench/fuzz_dicom.py [--mutations 400] [--seed 0]
(prints a markdown table of outcomes per operator; tests/test_dicom_fuzz.py runs the same fuzz).
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from abmseg.errors import PatientDataError
from abmseg.io.convert import convert_ct, convert_pet
from abmseg.io.dicom_series import PIXEL_FORMAT_TAGS
from abmseg.io.suv import SHARED_TAGS
from abmseg.io.volume import Geometry

PATIENT = "SYN001"
FOLDERS = {"CT": "CT", "PT": "PET"}
OUTCOMES = ("same", "error", "crash", "wrong", "unclear error", "unexpected")

# Tags the reader uses (or might use); "info." means the first RadiopharmaceuticalInformation item.
COMMON_TAGS = [
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    *PIXEL_FORMAT_TAGS,
    "RescaleSlope",
    "RescaleIntercept",
    "SeriesInstanceUID",
    "Modality",
    "PixelData",
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
    "SliceLocation",
]
PET_TAGS = [
    *SHARED_TAGS,
    "AcquisitionDate",
    "AcquisitionTime",
    "NumberOfSlices",
    "RadiopharmaceuticalInformationSequence",
    "info.RadionuclideTotalDose",
    "info.RadionuclideHalfLife",
    "info.RadiopharmaceuticalStartTime",
    "info.RadiopharmaceuticalStartDateTime",
]
# Numbers that are legitimate values of a tag (another intercept, another time of day): garbage
# that the reader reads as such a number would be a valid, different input, not a damaged one.
LEGITIMATE_NUMBER: dict[str, Callable[[float], bool]] = {
    "RescaleSlope": lambda v: v > 0,
    "RescaleIntercept": lambda v: True,
    "PatientWeight": lambda v: 0.2 <= v <= 500,
    "info.RadionuclideTotalDose": lambda v: v >= 1e6,
    "info.RadionuclideHalfLife": lambda v: v > 0,
    "SeriesDate": lambda v: True,
    "SeriesTime": lambda v: True,
    "AcquisitionDate": lambda v: True,
    "AcquisitionTime": lambda v: True,
    "info.RadiopharmaceuticalStartTime": lambda v: True,
    "info.RadiopharmaceuticalStartDateTime": lambda v: True,
}
# (label, VR or None for the tag's own VR, raw value, the number a reader could take it for)
GARBAGE: list[tuple[str, str | None, bytes, float | None]] = [
    ("text 'abc'", None, b"abc", None),
    ("empty", None, b"", None),
    ("'nan'", None, b"nan", None),
    ("'inf'", None, b"inf", None),
    ("'-inf'", None, b"-inf", None),
    ("'1e999'", None, b"1e999", None),
    ("'0'", None, b"0", 0.0),
    ("'-1'", None, b"-1", -1.0),
    ("7 values", None, b"1\\2\\3\\4\\5\\6\\7", None),
    ("'1\\abc'", None, b"1\\abc", None),
    ("binary as UN", "UN", bytes(range(250, 256)) + b"\x00\x17", None),
    ("binary as OB", "OB", b"\xde\xad\xbe\xef", None),
    ("3 bytes as US", "US", b"\x01\x02\x03", 513.0),
    ("NaN as FD", "FD", np.array([np.nan]).tobytes(), None),
    ("bytes as SQ", "SQ", b"\x01\x02\x03\x04", None),
    ("number as LO", "LO", b"12", 12.0),
    ("bad date as DA", "DA", b"2024-13-01", None),
]
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian (data stays explicit)
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.3.4.5",  # unknown
]


@dataclass
class Series:
    """One unmutated series: file names, bytes, and the files' order along the slice normal."""

    modality: str
    names: list[str]
    raw: list[bytes]
    by_position: list[int]
    step: float


def load_series(folder: Path, modality: str) -> Series:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    raw = [(folder / n).read_bytes() for n in names]
    z = [float(pydicom.dcmread(io.BytesIO(b)).ImagePositionPatient[2]) for b in raw]
    order = [int(i) for i in np.argsort(z)]
    return Series(modality, names, raw, order, float(np.median(np.diff(sorted(z)))))


class Draft:
    """A copy of one series to mutate: a file stays its original bytes until it is changed."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.files: dict[str, bytes | Dataset] = dict(zip(series.names, series.raw, strict=True))

    @property
    def n(self) -> int:
        return len(self.series.names)

    def name_at(self, k: int) -> str:
        """File name of the k-th slice along the slice normal (negative k counts from the end)."""
        return self.series.names[self.series.by_position[k]]

    def ds(self, name: str) -> Dataset:
        content = self.files[name]
        if isinstance(content, bytes):
            content = pydicom.dcmread(io.BytesIO(content))
            self.files[name] = content
        return content

    def datasets(self, scope: str | list[str]) -> list[Dataset]:
        names = list(self.files) if scope == "all" else scope
        return [self.ds(n) for n in names]

    def data(self, name: str) -> bytes:
        content = self.files[name]
        if isinstance(content, bytes):
            return content
        buffer = io.BytesIO()
        content.save_as(buffer)
        return buffer.getvalue()

    def changed(self) -> tuple[dict[str, bytes], list[str]]:
        """Files to write (new or changed) and original names that were removed."""
        original = dict(zip(self.series.names, self.series.raw, strict=True))
        write = {n: self.data(n) for n, c in self.files.items() if original.get(n) is not c}
        removed = [n for n in original if n not in self.files]
        return write, removed


def target(ds: Dataset, keyword: str) -> tuple[Dataset | None, str]:
    """The dataset holding ``keyword`` ("info." keywords live in the radiopharmaceutical item)."""
    if keyword.startswith("info."):
        sequence = ds.get("RadiopharmaceuticalInformationSequence")
        return (sequence[0] if sequence else None), keyword[5:]
    return ds, keyword


def set_raw(ds: Dataset, keyword: str, vr: str | None, value: bytes) -> None:
    """Store ``value`` verbatim under ``keyword`` with VR ``vr`` (default: the tag's own VR)."""
    holder, keyword = target(ds, keyword)
    if holder is None:
        return
    tag = Tag(keyword)
    vr = vr or dictionary_VR(tag)
    if len(value) % 2:
        value += b"\x00" if vr in {"OB", "UN", "US", "FD", "SQ", "OW", "UI"} else b" "
    holder[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def delete(ds: Dataset, keyword: str) -> None:
    holder, keyword = target(ds, keyword)
    if holder is not None and keyword in holder:
        del holder[keyword]


def number(value: float) -> bytes:
    return repr(float(value)).encode() if math.isfinite(value) else str(value).encode()


# --- operators: op(draft, rng) -> description; each only makes "same or clear error" changes ---


def _scope(draft: Draft, rng: np.random.Generator) -> tuple[str, str | list[str]]:
    if rng.random() < 0.6:
        k = int(rng.integers(draft.n))
        return f"slice {k}", [draft.name_at(k)]
    return "all slices", "all"


def _tags(draft: Draft) -> list[str]:
    return COMMON_TAGS + (PET_TAGS if draft.series.modality == "PT" else [])


def op_delete_tag(draft: Draft, rng: np.random.Generator) -> str:
    keyword = str(rng.choice(_tags(draft)))
    where, scope = _scope(draft, rng)
    for ds in draft.datasets(scope):
        delete(ds, keyword)
    return f"delete {keyword} ({where})"


def op_garbage_value(draft: Draft, rng: np.random.Generator) -> str:
    keyword = str(rng.choice(_tags(draft)))
    legitimate = LEGITIMATE_NUMBER.get(keyword, lambda v: False)
    choices = [g for g in GARBAGE if g[3] is None or not legitimate(g[3])]
    if keyword == "PixelData":  # pydicom's writer itself inspects PixelData: it must not be SQ
        choices = [g for g in choices if g[1] != "SQ"]
    label, vr, value, _ = choices[int(rng.integers(len(choices)))]
    where, scope = _scope(draft, rng)
    for ds in draft.datasets(scope):
        set_raw(ds, keyword, vr, value)
    return f"{keyword} = {label} ({where})"


BAD_NUMBERS = {
    "PixelSpacing": ["0", "neg", "nan", "inf"],
    "RescaleSlope": ["0", "neg", "nan", "inf", "1e38"],
    "RescaleIntercept": ["nan", "inf", "-inf", "1e39"],
    "ImagePositionPatient": ["nan", "inf"],
    "ImageOrientationPatient": ["nan", "inf", "x2"],
    "Rows": ["0"],
    "Columns": ["0"],
    "PatientWeight": ["0", "neg", "nan", "inf", "x1000"],
    "info.RadionuclideTotalDose": ["0", "neg", "nan", "inf", "/1e6"],
    "info.RadionuclideHalfLife": ["0", "neg", "nan", "inf"],
}


def op_bad_number(draft: Draft, rng: np.random.Generator) -> str:
    keywords = [k for k in BAD_NUMBERS if k in _tags(draft)]
    keyword = keywords[int(rng.integers(len(keywords)))]
    how = str(rng.choice(BAD_NUMBERS[keyword]))
    where, scope = _scope(draft, rng)
    pick = int(rng.integers(6))
    for ds in draft.datasets(scope):
        holder, key = target(ds, keyword)
        value = holder[key].value
        values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
        i = pick % len(values)
        old = float(values[i])
        new = {
            "0": 0.0,
            "neg": -abs(old) or -1.0,
            "nan": math.nan,
            "inf": math.inf,
            "-inf": -math.inf,
            "x2": old * 2 or 2.0,
            "x1000": old * 1000,
            "/1e6": old / 1e6,
            "1e38": 1e38,
            "1e39": 1e39,
        }[how]
        if key in {"Rows", "Columns"}:
            holder[key].value = int(new)
            continue
        values[i] = new
        set_raw(ds, keyword, None, b"\\".join(number(v) for v in values))
    return f"{keyword} {how} ({where})"


def op_duplicate_slice(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    name = draft.name_at(k)
    ds = pydicom.dcmread(io.BytesIO(draft.data(name)))
    if rng.random() < 0.5:
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
        ds.InstanceNumber = 9999
    draft.files[f"copy_{name}"] = ds
    return f"duplicate slice {k}"


def op_remove_slice(draft: Draft, rng: np.random.Generator) -> str:
    # A CT has no slice count: losing an end slice is a shorter, valid series. PET says
    # NumberOfSlices, so any of its slices may go.
    low = 1 if draft.series.modality == "CT" else 0
    high = draft.n - 1 if draft.series.modality == "CT" else draft.n
    k = int(rng.integers(low, high))
    del draft.files[draft.name_at(k)]
    return f"remove slice {k}"


def op_shift_slice(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    position = [float(v) for v in ds.ImagePositionPatient]
    if rng.random() < 0.5:
        factor = float(rng.choice([rng.uniform(0.05, 0.95), 1.0, 2.0])) * float(rng.choice([-1, 1]))
        position[2] += factor * draft.series.step
        what = f"{factor:+.2f} steps along z"
    else:
        axis = int(rng.integers(2))
        delta = float(rng.uniform(0.05, 5.0)) * float(rng.choice([-1, 1]))
        position[axis] += delta
        what = f"{delta:+.2f} mm in-plane"
    ds.ImagePositionPatient = [f"{v:.6g}"[:16] for v in position]
    return f"shift slice {k} {what}"


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def op_orient_slice(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    if rng.random() < 0.3:
        iop[3:] = -iop[3:]
        what = "column direction flipped"
    else:
        degrees = float(rng.uniform(0.05, 30.0))
        r = _rotation(rng.normal(size=3), degrees)
        iop = np.concatenate([r @ iop[:3], r @ iop[3:]])
        what = f"rotated {degrees:.2f} deg"
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    return f"orientation of slice {k} {what}"


def op_gantry_tilt(draft: Draft, rng: np.random.Generator) -> str:
    degrees = float(rng.uniform(1.0, 30.0))
    sheared = rng.random() < 0.8
    for k in range(draft.n):
        ds = draft.ds(draft.name_at(k))
        ds.GantryDetectorTilt = f"{degrees:.3f}"
        if sheared:
            position = [float(v) for v in ds.ImagePositionPatient]
            position[1] += k * draft.series.step * math.tan(math.radians(degrees))
            ds.ImagePositionPatient = [f"{v:.6g}"[:16] for v in position]
    # Only the tag, with positions along the normal, is a reconstruction on the tilted plane
    # already resampled: the same volume.
    return f"gantry tilt {degrees:.1f} deg" + ("" if sheared else " (tag only)")


def op_resize_slice(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    choice = int(rng.integers(3))
    if choice == 0:
        key = str(rng.choice(["Rows", "Columns"]))
        delta = int(rng.choice([-64, -1, 1, 7, 128]))
        ds[key].value = max(1, int(ds[key].value) + delta)
        return f"slice {k} {key} {delta:+d} (pixel data unchanged)"
    if choice == 1:
        pixels = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.astype("<i2").tobytes()
        return f"slice {k} resampled to {pixels.shape[0]}x{pixels.shape[1]}"
    pixels = ds.pixel_array[:, : ds.Columns // 2].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype("<i2").tobytes()
    return f"slice {k} cropped to {pixels.shape[0]}x{pixels.shape[1]}"


def op_pixel_bytes(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    data = ds.PixelData
    row = int(ds.Columns) * 2
    change = int(rng.choice([-row, -2, -3, 2, row, -len(data) // 2, -len(data)]))
    if change < 0:
        ds.PixelData = data[:change]
    else:
        ds.PixelData = data + bytes(rng.integers(0, 256, change, dtype=np.uint8))
    return f"slice {k} pixel data {change:+d} bytes"


def op_pixel_format(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    key, value = [
        ("BitsAllocated", 8),
        ("BitsAllocated", 32),
        ("BitsStored", 12),
        ("HighBit", 11),
        ("PixelRepresentation", 0),
        ("SamplesPerPixel", 3),
        ("PhotometricInterpretation", "RGB"),
        ("PhotometricInterpretation", "PALETTE COLOR"),
        ("NumberOfFrames", 2),
    ][int(rng.integers(9))]
    setattr(ds, key, value)
    return f"slice {k} {key} = {value}"


def op_transfer_syntax(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    name = draft.name_at(k)
    original = draft.data(name)
    meta = pydicom.dcmread(io.BytesIO(original), stop_before_pixels=True).file_meta
    uid = str(rng.choice(TRANSFER_SYNTAXES))
    meta.TransferSyntaxUID = uid
    # Rewrite the file meta header only: the data set stays explicit VR little endian.
    head = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(head, meta, enforce_standard=True)
    draft.files[name] = original[:128] + b"DICM" + head.getvalue() + original[_meta_end(original) :]
    return f"slice {k} TransferSyntaxUID {uid} (data not re-encoded)"


def _meta_end(data: bytes) -> int:
    """Offset just past the file meta group (its group length element says how long it is)."""
    length = int.from_bytes(data[140:144], "little")
    return 144 + length


def op_truncate_file(draft: Draft, rng: np.random.Generator) -> str:
    k = int(rng.integers(draft.n))
    name = draft.name_at(k)
    data = draft.data(name)
    cut = int(rng.integers(0, len(data)))
    draft.files[name] = data[:cut]
    return f"slice {k} file cut at byte {cut} of {len(data)}"


def op_not_dicom(draft: Draft, rng: np.random.Generator) -> str:
    junk = bytes(rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8))
    if rng.random() < 0.5:
        draft.files["notes.txt"] = b"exported by the PACS; see ticket 1234\n"
        return "extra text file in the series folder"
    k = int(rng.integers(draft.n))
    draft.files[draft.name_at(k)] = junk
    return f"slice {k} replaced by {len(junk)} random bytes"


TIME_TAGS = ("Series", "Acquisition", "Content")


def shift_pet_times(draft: Draft, seconds: float, injection_seconds: float = 0.0) -> None:
    """Move every PET date/time by ``seconds`` (the injection by ``injection_seconds`` more)."""
    import datetime as dt

    def moved(date: str, time_: str, by: float) -> tuple[str, str]:
        stamp = dt.datetime.strptime(date + time_.split(".")[0], "%Y%m%d%H%M%S")
        stamp += dt.timedelta(seconds=by)
        return stamp.strftime("%Y%m%d"), stamp.strftime("%H%M%S") + ".000000"

    for ds in draft.datasets("all"):
        for what in TIME_TAGS:
            date, time_ = moved(ds[f"{what}Date"].value, ds[f"{what}Time"].value, seconds)
            ds[f"{what}Date"].value, ds[f"{what}Time"].value = date, time_
        info = ds.RadiopharmaceuticalInformationSequence[0]
        full = info.RadiopharmaceuticalStartDateTime
        date, time_ = moved(full[:8], full[8:], seconds + injection_seconds)
        info.RadiopharmaceuticalStartDateTime = date + time_
        info.RadiopharmaceuticalStartTime = time_


def op_pet_times(draft: Draft, rng: np.random.Generator) -> str:
    choice = int(rng.integers(5))
    if choice <= 1:
        seconds = float(rng.integers(-20 * 3600, 20 * 3600))
        shift_pet_times(draft, seconds)
        what = f"all PET times {seconds / 3600:+.2f} h (interval kept)"
        if choice == 1:
            for ds in draft.datasets("all"):
                del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
            what += ", injection time of day only"
        return what
    if choice == 2:
        # Injection after the scan start: a dose from the future.
        late = float(rng.integers(1, 4 * 3600))
        ds0 = draft.ds(draft.name_at(0))
        info = ds0.RadiopharmaceuticalInformationSequence[0]
        import datetime as dt

        scan = dt.datetime.strptime(ds0.SeriesDate + ds0.SeriesTime.split(".")[0], "%Y%m%d%H%M%S")
        injection = dt.datetime.strptime(
            info.RadiopharmaceuticalStartDateTime.split(".")[0], "%Y%m%d%H%M%S"
        )
        shift_pet_times(draft, 0.0, (scan - injection).total_seconds() + late)
        return f"injection {late / 60:.0f} min after the scan start"
    if choice == 3:
        hours = float(rng.uniform(12.5, 72))
        shift_pet_times(draft, 0.0, -hours * 3600)
        return f"injection {hours:.1f} h earlier"
    k = int(rng.integers(draft.n))
    ds = draft.ds(draft.name_at(k))
    ds.SeriesTime = f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}17.000000"
    return f"slice {k} SeriesTime {ds.SeriesTime}"


def op_shuffle_names(draft: Draft, rng: np.random.Generator) -> str:
    """Meaning-preserving: file names and InstanceNumbers say nothing about slice order."""
    names = list(draft.files)
    contents = [draft.files[n] for n in names]
    permutation = rng.permutation(len(names))
    draft.files = {names[i]: contents[j] for i, j in enumerate(permutation)}
    if rng.random() < 0.5:
        for k in range(draft.n):
            draft.ds(draft.name_at(k)).InstanceNumber = draft.n - k
        return "file names shuffled, InstanceNumber reversed"
    return "file names shuffled"


def op_rescale_recode(draft: Draft, rng: np.random.Generator) -> str:
    """Meaning-preserving: other (compensated) rescale values, unused tags removed."""
    where, scope = _scope(draft, rng)
    if draft.series.modality == "CT":
        delta = int(rng.integers(-500, 500))
        for ds in draft.datasets(scope):
            pixels = ds.pixel_array.astype(np.int32) - delta
            ds.PixelData = pixels.astype("<i2").tobytes()
            ds.RescaleIntercept = str(float(ds.RescaleIntercept) + delta)
            ds.RescaleSlope = "1.0000"
        return f"CT intercept {delta:+d} with pixels compensated ({where})"
    for ds in draft.datasets(scope):
        for keyword in ("SliceLocation", "InstanceNumber", "ImageIndex", "SliceThickness"):
            delete(ds, keyword)
        ds.PhotometricInterpretation = "MONOCHROME1"
    return f"unused tags deleted, MONOCHROME1 ({where})"


OPERATORS: dict[str, tuple[Callable[[Draft, np.random.Generator], str], tuple[str, ...]]] = {
    "delete tag": (op_delete_tag, ("CT", "PT")),
    "garbage value / wrong VR": (op_garbage_value, ("CT", "PT")),
    "NaN / inf / 0 / negative": (op_bad_number, ("CT", "PT")),
    "duplicate slice": (op_duplicate_slice, ("CT", "PT")),
    "remove slice": (op_remove_slice, ("CT", "PT")),
    "shift slice": (op_shift_slice, ("CT", "PT")),
    "orientation of one slice": (op_orient_slice, ("CT", "PT")),
    "gantry tilt": (op_gantry_tilt, ("CT", "PT")),
    "Rows / Columns": (op_resize_slice, ("CT", "PT")),
    "pixel data length": (op_pixel_bytes, ("CT", "PT")),
    "pixel format": (op_pixel_format, ("CT", "PT")),
    "transfer syntax": (op_transfer_syntax, ("CT", "PT")),
    "truncated file": (op_truncate_file, ("CT", "PT")),
    "not DICOM": (op_not_dicom, ("CT", "PT")),
    "PET times": (op_pet_times, ("PT",)),
    "file names / order": (op_shuffle_names, ("CT", "PT")),
    "recoded rescale / unused tags": (op_rescale_recode, ("CT", "PT")),
}


@dataclass
class Result:
    operator: str
    modality: str
    description: str
    outcome: str  # one of OUTCOMES
    message: str = ""


@dataclass
class Fuzzer:
    """A valid patient (raw folder), its reference conversion, and a work folder to mutate."""

    patient_dir: Path
    work: Path
    patient: str = PATIENT
    series: dict[str, Series] = field(init=False)
    reference: dict[str, sitk.Image] = field(init=False)

    def __post_init__(self) -> None:
        self.series, self.reference = {}, {}
        for modality, folder in FOLDERS.items():
            self.series[modality] = load_series(self.patient_dir / folder, modality)
            target_dir = self.work / folder
            if target_dir.exists():
                shutil.rmtree(target_dir)
            shutil.copytree(self.patient_dir / folder, target_dir)
            self.reference[modality] = self.convert(modality)

    def folder(self, modality: str) -> Path:
        return self.work / FOLDERS[modality]

    def convert(self, modality: str) -> sitk.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if modality == "CT":
                return convert_ct(self.folder(modality), self.patient)[0]
            return convert_pet(self.folder(modality), self.patient)[0]

    def run(
        self, modality: str, mutate: Callable[[Draft], str], world: bool = False
    ) -> tuple[str, str, str]:
        """Apply ``mutate`` to a draft of the series, convert, restore; (outcome, what, message).

        ``world``: a success counts as "same" when the voxels agree in world space (the index
        order may differ, as for a stack read in the opposite direction).
        """
        draft = Draft(self.series[modality])
        folder = self.folder(modality)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            description = mutate(draft)
            write, removed = draft.changed()
        for name in removed:
            (folder / name).unlink()
        for name, data in write.items():
            (folder / name).write_bytes(data)
        try:
            outcome, message = self.classify(modality, world)
        finally:
            original = dict(zip(draft.series.names, draft.series.raw, strict=True))
            for name in write:
                if name not in original:
                    (folder / name).unlink()
            for name in [*write, *removed]:
                if name in original:
                    (folder / name).write_bytes(original[name])
        return outcome, description, message

    def classify(self, modality: str, world: bool = False) -> tuple[str, str]:
        folder = self.folder(modality)
        try:
            image = self.convert(modality)
        except PatientDataError as exc:
            message = str(exc)
            clear = f"patient {self.patient}" in message and "Fix:" in message
            return ("error" if clear and str(folder) in message else "unclear error"), message
        except Exception as exc:  # the point of the fuzz: nothing else may escape
            return "crash", f"{type(exc).__name__}: {exc}"[:300]
        same = self.same_in_world(modality, image) if world else self.same(modality, image)
        return ("same" if same else "wrong"), ""

    def same(self, modality: str, image: sitk.Image) -> bool:
        reference = self.reference[modality]
        if not Geometry.of(image).matches(Geometry.of(reference)):
            return False
        a = sitk.GetArrayViewFromImage(image).astype(np.float64)
        b = sitk.GetArrayViewFromImage(reference).astype(np.float64)
        if modality == "CT":
            return bool(np.array_equal(a, b))
        return bool(np.allclose(a, b, rtol=1e-6, atol=0))

    def same_in_world(self, modality: str, image: sitk.Image) -> bool:
        """Same voxels in world space, whatever the index order (a flipped but correct stack)."""
        reference = self.reference[modality]
        resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        a = sitk.GetArrayViewFromImage(resampled).astype(np.float64)
        b = sitk.GetArrayViewFromImage(reference).astype(np.float64)
        return bool(np.allclose(a, b, rtol=1e-6, atol=0))


def fuzz(fuzzer: Fuzzer, n_mutations: int, seed: int) -> list[Result]:
    """``n_mutations`` random mutations, operators drawn uniformly, each on CT or PET."""
    rng = np.random.default_rng(seed)
    names = list(OPERATORS)
    results = []
    for _ in range(n_mutations):
        operator = names[int(rng.integers(len(names)))]
        op, modalities = OPERATORS[operator]
        modality = modalities[int(rng.integers(len(modalities)))]
        sub = np.random.default_rng(rng.integers(2**63))
        outcome, description, message = fuzzer.run(modality, lambda d, op=op, r=sub: op(d, r))
        results.append(Result(operator, modality, description, outcome, message))
    return results


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.outcome not in {"same", "error"}]


def table(results: list[Result]) -> str:
    """Markdown: per operator, how many mutations ended in each outcome."""
    counts = Counter((r.operator, r.outcome) for r in results)
    kinds = ["same", "error"] + [k for k in OUTCOMES[2:] if any(r.outcome == k for r in results)]
    lines = [
        "| operator | tried | " + " | ".join(kinds) + " |",
        "|---|---:|" + "---:|" * len(kinds),
    ]
    for operator in OPERATORS:
        tried = sum(counts[(operator, k)] for k in OUTCOMES)
        if tried:
            cells = " | ".join(str(counts[(operator, k)]) for k in kinds)
            lines.append(f"| {operator} | {tried} | {cells} |")
    total = " | ".join(str(sum(r.outcome == k for r in results)) for k in kinds)
    lines.append(f"| **all** | {len(results)} | {total} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-failures", type=int, default=20)
    args = parser.parse_args(argv)

    from abmseg.synth import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_cohort(root / "raw", n_patients=1, seed=11, preset="tiny")
        start = time.perf_counter()
        fuzzer = Fuzzer(root / "raw" / PATIENT, root / "work")
        results = fuzz(fuzzer, args.mutations, args.seed)
        seconds = time.perf_counter() - start
    print(f"{len(results)} mutations, seed {args.seed}, {seconds:.1f} s\n")
    print(table(results))
    bad = failures(results)
    for r in bad[: args.show_failures]:
        print(
            f"\nFAILURE {r.outcome}: {r.operator} on {r.modality}: {r.description}\n  {r.message}"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
