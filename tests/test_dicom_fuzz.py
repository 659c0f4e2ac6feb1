"""DICOM fuzz: damaged or odd series end in the right volume or a clear error, never in a crash
or a silently wrong volume.

Curated cases name their expected outcome; the seeded random fuzz (bench/fuzz_dicom.py holds the
operators, `python bench/fuzz_dicom.py` runs more of them) only requires "same or clear error".
A slow test runs Snakemake with --keep-going on a cohort where four patients are broken.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import list_dicom_files
from abmseg.preprocess.convert import ConvertedPaths, convert_patient
from abmseg.synth import generate_cohort
from abmseg.workflow_run import run_snakemake

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_dicom", REPO / "bench" / "fuzz_dicom.py")
fz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_dicom"] = fz
_spec.loader.exec_module(fz)

N_MUTATIONS = 400
SEED = 20240315


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory, tiny_cohort):
    return fz.Fuzzer(tiny_cohort / "SYN001", tmp_path_factory.mktemp("fuzz"))


# --- curated cases: each mutation returns the file name the error must name ("" = the folder) ---


def all_slices(edit: Callable[[pydicom.Dataset], None]) -> Callable[[fz.Draft], str]:
    def mutate(draft):
        for ds in draft.datasets("all"):
            edit(ds)
        return ""

    return mutate


def one_slice(k: int, edit: Callable[[pydicom.Dataset], None]) -> Callable[[fz.Draft], str]:
    def mutate(draft):
        edit(draft.ds(draft.name_at(k)))
        return draft.name_at(k)

    return mutate


def raw(keyword: str, vr: str | None, value: bytes) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: fz.set_raw(ds, keyword, vr, value)


def delete(keyword: str) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: fz.delete(ds, keyword)


def reverse_file_order(draft):
    """Names and InstanceNumbers run against the slice positions (a negative step in z)."""
    names = [draft.name_at(k) for k in range(draft.n)]
    contents = [draft.files[n] for n in names]
    draft.files = dict(zip(names, reversed(contents), strict=True))
    for k in range(draft.n):
        draft.ds(draft.name_at(draft.n - 1 - k)).InstanceNumber = k + 1
    return ""


def flipped_stack(draft):
    """The same CT written top-down with the column direction flipped: normal -z, rows reversed."""
    for ds in draft.datasets("all"):
        pixels = ds.pixel_array[::-1].copy()
        ds.PixelData = pixels.astype("<i2").tobytes()
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        y += (int(ds.Rows) - 1) * float(ds.PixelSpacing[0])
        ds.ImagePositionPatient = [f"{x:.6f}", f"{y:.6f}", f"{z:.6f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "-1", "0"]
    return ""


def duplicate(k: int):
    def mutate(draft):
        name = draft.name_at(k)
        draft.files["copy_" + name] = draft.files[name]
        return ""

    return mutate


def gantry_tilt(sheared: bool):
    def mutate(draft):
        for k in range(draft.n):
            ds = draft.ds(draft.name_at(k))
            ds.GantryDetectorTilt = "15"
            if sheared:
                x, y, z = (float(v) for v in ds.ImagePositionPatient)
                y += k * draft.series.step * np.tan(np.radians(15))
                ds.ImagePositionPatient = [f"{x:.6f}", f"{y:.6f}", f"{z:.6f}"]
        return ""

    return mutate


def resample_slice(k: int):
    def mutate(draft):
        ds = draft.ds(draft.name_at(k))
        pixels = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [str(2 * float(v)) for v in ds.PixelSpacing]
        ds.PixelData = pixels.astype("<i2").tobytes()
        return draft.name_at(k)

    return mutate


def file_bytes(k: int, change: Callable[[bytes], bytes]):
    def mutate(draft):
        name = draft.name_at(k)
        draft.files[name] = change(draft.data(name))
        return name

    return mutate


def transfer_syntax(k: int, uid: str):
    def mutate(draft):
        name = draft.name_at(k)
        data = draft.data(name)
        meta = pydicom.dcmread(fz.io.BytesIO(data), stop_before_pixels=True).file_meta
        meta.TransferSyntaxUID = uid
        head = fz.io.BytesIO()
        pydicom.filewriter.write_file_meta_info(head, meta, enforce_standard=True)
        draft.files[name] = data[:128] + b"DICM" + head.getvalue() + data[fz._meta_end(data) :]
        return name

    return mutate


def compensated_intercept(draft):
    """Another CT intercept with the stored values moved to match: the same HU."""
    for ds in draft.datasets("all"):
        ds.PixelData = (ds.pixel_array.astype(np.int32) + 24).astype("<i2").tobytes()
        ds.RescaleIntercept = "-1048.0"
        ds.RescaleSlope = "1.000"
    return ""


def injection_at(clock: str, time_of_day_only: bool):
    """Move every PET time so the injection is at ``clock`` (HHMMSS), the uptake unchanged."""

    def mutate(draft):
        info = draft.ds(draft.name_at(0)).RadiopharmaceuticalInformationSequence[0]
        start = dt.datetime.strptime(
            info.RadiopharmaceuticalStartDateTime.split(".")[0], "%Y%m%d%H%M%S"
        )
        wanted = dt.datetime.combine(start.date(), dt.datetime.strptime(clock, "%H%M%S").time())
        fz.shift_pet_times(draft, (wanted - start).total_seconds())
        first = draft.ds(draft.name_at(0))
        assert first.SeriesDate != first.StudyDate, "the scan must fall on the next day"
        if time_of_day_only:
            for ds in draft.datasets("all"):
                del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        return ""

    return mutate


def injection_after_scan(minutes: float, time_of_day_only: bool):
    def mutate(draft):
        first = draft.ds(draft.name_at(0))
        info = first.RadiopharmaceuticalInformationSequence[0]
        scan = dt.datetime.strptime(first.SeriesDate + first.SeriesTime[:6], "%Y%m%d%H%M%S")
        start = dt.datetime.strptime(info.RadiopharmaceuticalStartDateTime[:14], "%Y%m%d%H%M%S")
        fz.shift_pet_times(draft, 0.0, (scan - start).total_seconds() + 60 * minutes)
        if time_of_day_only:
            for ds in draft.datasets("all"):
                del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        return ""

    return mutate


def scale_info(keyword: str, factor: float):
    def edit(ds):
        info = ds.RadiopharmaceuticalInformationSequence[0]
        setattr(info, keyword, f"{float(info.get(keyword)) * factor:.6g}")

    return edit


def remove_slice(k: int):
    def mutate(draft):
        del draft.files[draft.name_at(k)]
        return ""

    return mutate


def extra_file(name: str, data: bytes):
    def mutate(draft):
        draft.files[name] = data
        return name

    return mutate


@dataclass(frozen=True)
class Case:
    id: str
    modality: str
    mutate: Callable[[fz.Draft], str]
    expect: str  # "same", "same in world space" or "error"
    words: tuple[str, ...] = ()
    was: str = ""  # the reader's behaviour before this test existed, where it was wrong


MIDDLE = 17
CASES = [
    # Rescale: Type 1 tags, never defaulted.
    Case(
        "ct-no-slope",
        "CT",
        all_slices(delete("RescaleSlope")),
        "error",
        ("RescaleSlope", "missing"),
        was="slope defaulted to 1 (right for this CT by luck; Type 1, so refused now)",
    ),
    Case(
        "ct-no-intercept-one-slice",
        "CT",
        one_slice(MIDDLE, delete("RescaleIntercept")),
        "error",
        ("RescaleIntercept", "missing"),
        was="intercept defaulted to 0: that slice 1024 HU too bright",
    ),
    Case(
        "ct-empty-intercept",
        "CT",
        all_slices(raw("RescaleIntercept", None, b"")),
        "error",
        ("RescaleIntercept",),
        was="empty intercept read as 0",
    ),
    Case(
        "pet-no-slope-one-slice",
        "PT",
        one_slice(MIDDLE, delete("RescaleSlope")),
        "error",
        ("RescaleSlope", "missing"),
        was="slope defaulted to 1: that slice's activity wrong by its real slope",
    ),
    Case(
        "pet-zero-slope",
        "PT",
        one_slice(MIDDLE, raw("RescaleSlope", None, b"0")),
        "error",
        ("RescaleSlope", "positive"),
        was="slope 0 read as 1",
    ),
    Case(
        "ct-slope-text",
        "CT",
        one_slice(MIDDLE, raw("RescaleSlope", None, b"abc")),
        "error",
        ("RescaleSlope",),
        was="ValueError crash",
    ),
    Case(
        "ct-slope-nan",
        "CT",
        all_slices(raw("RescaleSlope", None, b"nan")),
        "error",
        ("RescaleSlope",),
    ),
    Case(
        "ct-intercept-inf",
        "CT",
        one_slice(3, raw("RescaleIntercept", None, b"inf")),
        "error",
        ("RescaleIntercept",),
    ),
    Case(
        "ct-inf-after-rescale",
        "CT",
        one_slice(MIDDLE, raw("RescaleSlope", None, b"1e38")),
        "error",
        ("not finite after rescale",),
    ),
    # Pixel spacing and geometry tags.
    Case(
        "ct-no-pixel-spacing",
        "CT",
        one_slice(MIDDLE, delete("PixelSpacing")),
        "error",
        ("PixelSpacing",),
    ),
    Case(
        "ct-pixel-spacing-text",
        "CT",
        all_slices(raw("PixelSpacing", "LO", b"abc")),
        "error",
        ("PixelSpacing", "malformed"),
    ),
    Case(
        "ct-pixel-spacing-nan",
        "CT",
        all_slices(raw("PixelSpacing", None, b"nan\\nan")),
        "error",
        ("PixelSpacing",),
    ),
    Case(
        "ct-pixel-spacing-zero",
        "CT",
        all_slices(raw("PixelSpacing", None, b"0\\0")),
        "error",
        ("non-positive PixelSpacing",),
    ),
    Case(
        "pet-pixel-spacing-negative",
        "PT",
        all_slices(raw("PixelSpacing", None, b"-7.8125\\-7.8125")),
        "error",
        ("non-positive PixelSpacing",),
    ),
    Case(
        "ct-position-as-text",
        "CT",
        one_slice(MIDDLE, raw("ImagePositionPatient", "LO", b"100")),
        "error",
        ("ImagePositionPatient",),
        was="read character by character as (1, 0, 0); refused only by a later check",
    ),
    Case(
        "ct-position-bad-sequence",
        "CT",
        all_slices(raw("ImagePositionPatient", "SQ", b"\x01\x02\x03\x04")),
        "error",
        ("ImagePositionPatient", "cannot be decoded"),
        was="OSError crash",
    ),
    Case(
        "ct-rows-two-values",
        "CT",
        one_slice(MIDDLE, raw("Rows", "US", b"\x80\x00\x80\x00")),
        "error",
        ("Rows or Columns",),
        was="TypeError crash",
    ),
    Case(
        "ct-pixel-spacing-as-us",
        "CT",
        all_slices(raw("PixelSpacing", "US", b"\x01\x02\x03\x00")),
        "error",
        ("PixelSpacing", "VR US instead of DS"),
        was="binary bytes read as a spacing of 513 x 3 mm",
    ),
    Case(
        "pet-modality-bad-sequence-on-first-slice",
        "PT",
        one_slice(0, raw("Modality", "SQ", b"\x01\x02\x03\x04")),
        "error",
        ("Modality",),
        was="OSError crash",
    ),
    # Slice order and stacking.
    Case("ct-reverse-file-order", "CT", reverse_file_order, "same"),
    Case("ct-flipped-stack-negative-step", "CT", flipped_stack, "same in world space"),
    Case("pet-reverse-file-order", "PT", reverse_file_order, "same"),
    Case(
        "ct-one-slice-rotated",
        "CT",
        one_slice(
            MIDDLE,
            lambda ds: setattr(
                ds, "ImageOrientationPatient", ["1", "0", "0", "0", "0.9998477", "0.0174524"]
            ),
        ),
        "error",
        ("orientation differs",),
    ),
    Case("ct-duplicated-slice", "CT", duplicate(MIDDLE), "error", ("duplicated slice",)),
    Case("pet-duplicated-slice", "PT", duplicate(0), "error", ("duplicated slice",)),
    Case("ct-gantry-tilt", "CT", gantry_tilt(sheared=True), "error", ("gantry tilt",)),
    Case("ct-gantry-tilt-tag-only", "CT", gantry_tilt(sheared=False), "same"),
    Case("ct-mixed-matrix", "CT", resample_slice(MIDDLE), "error", ("matrix size",)),
    Case(
        "pet-last-slice-missing",
        "PT",
        remove_slice(-1),
        "error",
        ("NumberOfSlices", "missing"),
        was="a shorter PET volume, no error",
    ),
    # Pixel data and file damage.
    Case(
        "ct-truncated-pixel-data",
        "CT",
        file_bytes(MIDDLE, lambda b: b[:-200]),
        "error",
        ("pixel data holds",),
    ),
    Case(
        "ct-excess-pixel-data",
        "CT",
        one_slice(MIDDLE, lambda ds: setattr(ds, "PixelData", ds.PixelData + bytes(256))),
        "error",
        ("pixel data holds",),
        was="excess bytes ignored",
    ),
    Case(
        "ct-pixel-representation-one-slice",
        "CT",
        one_slice(MIDDLE, lambda ds: setattr(ds, "PixelRepresentation", 0)),
        "error",
        ("pixel format differs", "PixelRepresentation"),
        was="negative stored values of that slice read as 65000-odd",
    ),
    Case(
        "pet-bits-stored-one-slice",
        "PT",
        one_slice(MIDDLE, lambda ds: setattr(ds, "BitsStored", 12)),
        "error",
        ("pixel format differs", "BitsStored"),
        was="values above 2047 of that slice wrapped to negative",
    ),
    Case(
        "ct-multi-frame-slice",
        "CT",
        one_slice(MIDDLE, lambda ds: setattr(ds, "NumberOfFrames", 2)),
        "error",
        ("pixel data",),
    ),
    Case(
        "ct-unknown-transfer-syntax",
        "CT",
        transfer_syntax(MIDDLE, "1.2.3.4.5"),
        "error",
        ("TransferSyntaxUID",),
    ),
    Case(
        "ct-deflate-without-deflating",
        "CT",
        transfer_syntax(MIDDLE, "1.2.840.10008.1.2.1.99"),
        "error",
        ("not a readable DICOM file",),
        was="zlib.error crash",
    ),
    Case(
        "ct-slice-not-dicom",
        "CT",
        file_bytes(MIDDLE, lambda b: b"not DICOM at all\n" * 40),
        "error",
        ("not a readable DICOM file",),
    ),
    Case(
        "pet-extra-text-file",
        "PT",
        extra_file("README.txt", b"exported 2024\n"),
        "error",
        ("not a readable DICOM file",),
    ),
    Case("ct-compensated-intercept", "CT", compensated_intercept, "same"),
    # PET times, dose, weight.
    Case("pet-across-midnight", "PT", injection_at("233000", time_of_day_only=False), "same"),
    Case(
        "pet-across-midnight-time-only", "PT", injection_at("233000", time_of_day_only=True), "same"
    ),
    Case(
        "pet-dose-in-future",
        "PT",
        injection_after_scan(30, time_of_day_only=False),
        "error",
        ("dose in the future",),
    ),
    Case(
        "pet-dose-in-future-time-only",
        "PT",
        injection_after_scan(10, time_of_day_only=True),
        "error",
        ("implausible", "previous day"),
    ),
    Case(
        "pet-dose-in-mbq",
        "PT",
        all_slices(scale_info("RadionuclideTotalDose", 1e-6)),
        "error",
        ("injected dose", "implausible"),
        was="SUV a million times too high",
    ),
    Case(
        "pet-weight-in-grams",
        "PT",
        all_slices(
            lambda ds: setattr(ds, "PatientWeight", f"{float(ds.PatientWeight) * 1000:.6g}")
        ),
        "error",
        ("PatientWeight", "implausible"),
        was="SUV a thousand times too high",
    ),
    Case(
        "pet-weight-inf",
        "PT",
        all_slices(raw("PatientWeight", None, b"inf")),
        "error",
        ("patient weight",),
        was="SUV inf/NaN written",
    ),
    Case(
        "pet-dose-inf",
        "PT",
        all_slices(lambda ds: fz.set_raw(ds, "info.RadionuclideTotalDose", None, b"inf")),
        "error",
        ("injected dose",),
        was="SUV 0 everywhere",
    ),
    Case(
        "pet-half-life-inf",
        "PT",
        all_slices(lambda ds: fz.set_raw(ds, "info.RadionuclideHalfLife", None, b"inf")),
        "error",
        ("half-life",),
        was="no decay correction: SUV too low",
    ),
    Case(
        "pet-weight-differs-on-one-slice",
        "PT",
        one_slice(MIDDLE, lambda ds: setattr(ds, "PatientWeight", "55")),
        "error",
        ("disagree", "PatientWeight"),
        was="ignored: only the first slice's SUV tags were read",
    ),
    Case(
        "pet-radiopharmaceutical-not-a-sequence",
        "PT",
        all_slices(raw("RadiopharmaceuticalInformationSequence", "LO", b"abc")),
        "error",
        ("RadiopharmaceuticalInformationSequence",),
        was="AttributeError crash",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_curated_mutation(fuzzer, case):
    expected_file = {}

    def mutate(draft):
        expected_file["name"] = case.mutate(draft)
        return case.id

    outcome, _, message = fuzzer.run(
        case.modality, mutate, world=case.expect == "same in world space"
    )
    if case.expect.startswith("same"):
        assert outcome == "same", f"{case.id}: {outcome} {message}"
        return
    assert outcome == "error", f"{case.id}: expected a clear error, got {outcome} {message}"
    assert "patient SYN001" in message and "Fix:" in message
    assert str(fuzzer.folder(case.modality)) in message
    assert expected_file["name"] in message, f"the error must name {expected_file['name']}"
    for word in case.words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"


def test_refused_patient_writes_no_output(patient_copy, tmp_path):
    for path in list_dicom_files(patient_copy / "CT"):
        ds = pydicom.dcmread(path)
        del ds.RescaleIntercept
        ds.save_as(path)
    out = tmp_path / "out"
    paths = ConvertedPaths(
        *(out / n for n in ("ct.nii.gz", "pet.nii.gz", "label.nii.gz", "m.json"))
    )
    with pytest.raises(PatientDataError, match="RescaleIntercept is missing"):
        convert_patient(
            "SYN001",
            patient_copy / "CT",
            patient_copy / "PET",
            patient_copy / "label.nii.gz",
            paths,
        )
    assert not out.exists() or not any(out.iterdir())


def test_random_fuzz(fuzzer):
    results = fz.fuzz(fuzzer, N_MUTATIONS, SEED)
    print(f"\nDICOM fuzz: {len(results)} mutations, seed {SEED}\n")
    print(fz.table(results))
    bad = fz.failures(results)
    assert not bad, "\n".join(
        f"{r.outcome}: {r.operator} on {r.modality}: {r.description}: {r.message}" for r in bad
    )
    outcomes = {r.outcome for r in results}
    assert {"same", "error"} <= outcomes
    assert len({r.operator for r in results}) == len(fz.OPERATORS)


# --- pipeline: four broken patients fail alone, with a clear log, and leave nothing behind ---


def _edit_series(folder: Path, edit) -> None:
    for path in list_dicom_files(folder):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def _future_dose(ds) -> None:
    info = ds.RadiopharmaceuticalInformationSequence[0]
    scan = dt.datetime.strptime(ds.SeriesDate + ds.SeriesTime[:6], "%Y%m%d%H%M%S")
    info.RadiopharmaceuticalStartDateTime = (scan + dt.timedelta(minutes=20)).strftime(
        "%Y%m%d%H%M%S"
    )


def _tilt(folder: Path) -> None:
    for path in list_dicom_files(folder):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.4f}", f"{y + 0.2 * z:.4f}", f"{z:.4f}"]
        ds.GantryDetectorTilt = "11.3"
        ds.save_as(path)


BROKEN = {
    "SYN002": (
        "CT",
        lambda folder: _edit_series(folder, lambda ds: delattr(ds, "RescaleIntercept")),
        "RescaleIntercept",
    ),
    "SYN003": ("PET", lambda folder: _edit_series(folder, _future_dose), "dose in the future"),
    "SYN004": ("CT", _tilt, "gantry tilt"),
    "SYN005": (
        "PET",
        lambda folder: max(list_dicom_files(folder)).write_bytes(b"\x00" * 300),
        "not a readable DICOM file",
    ),
}


@pytest.mark.slow
def test_pipeline_keeps_going_past_broken_patients(tmp_path):
    sheet = generate_cohort(tmp_path / "raw", n_patients=6, seed=5, preset="tiny")
    for patient, (series, damage, _) in BROKEN.items():
        damage(tmp_path / "raw" / patient / series)
    work = tmp_path / "work"
    work.mkdir()
    patients = [f"SYN00{k}" for k in range(1, 7)]
    targets = [f"results/converted/{p}/ct.nii.gz" for p in patients]
    result = run_snakemake(work, sheet, "--cores", "2", "--keep-going", *targets)
    assert result.returncode != 0, "broken patients must make the run fail"
    for patient in ("SYN001", "SYN006"):
        for name in ("ct.nii.gz", "pet_suv.nii.gz", "label.nii.gz", "meta.json"):
            assert (work / "results" / "converted" / patient / name).is_file(), (
                patient,
                name,
                result.stderr[-3000:],
            )
    for patient, (_, _, words) in BROKEN.items():
        log = (work / "logs" / "convert" / f"{patient}.log").read_text()
        assert f"patient {patient}" in log and "Fix:" in log and words in log, log
        assert "Traceback" not in log, log
        assert not any((work / "results" / "converted" / patient).glob("*.nii.gz"))
    leftovers = [p for p in (work / "results").rglob("*") if ".part" in p.name]
    assert not leftovers, leftovers
