"""QA flags on planted faults (issue 18): a real CT DICOM series of the shared finished run,
damaged as a clinic's data can be, predicted with the run's own model bundle. Each fault must
fire its check; the undamaged series must fire none of the input checks (the FAST model's
masks are poor, so the output checks, region volume and uncertainty, are not asserted on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from abmseg.infer.ct_only import predict_ct_only
from abmseg.infer.model_bundle import load_model_bundle
from abmseg.infer.patient import PredictionPaths

pytestmark = pytest.mark.slow
INPUT_CHECKS = {"hu_calibration", "geometry", "field_of_view", "metal", "training_profile"}


@pytest.fixture(scope="module")
def bundle(pipeline):
    import torch

    folder = pipeline["work"] / "results" / "bundles" / "full"
    return load_model_bundle(folder, device=torch.device("cpu"), threads=2)


@pytest.fixture(scope="module")
def raw_patient(pipeline) -> Path:
    """A test patient's raw folder (read-only: faults are planted in copies)."""
    split = (pipeline["work"] / "results" / "split.tsv").read_text().splitlines()[1:]
    patient = next(line.split("\t")[0] for line in split if line.endswith("\ttest"))
    return pipeline["root"] / "raw" / patient


def files_by_height(folder: Path) -> list[tuple[float, Path]]:
    """The series' files with the height (LPS z, mm) of their slice, feet first."""
    rows = []
    for path in folder.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows.append((float(ds.ImagePositionPatient[2]), path))
    return sorted(rows)


def shift_hu(folder: Path, shift: float) -> None:
    """A wrong rescale intercept: every CT number off by ``shift``."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept = float(ds.RescaleIntercept) + shift
        ds.save_as(path)


def cut_above(folder: Path, height_mm: float) -> None:
    """A field of view that starts above ``height_mm``: the slices below it are not there."""
    for z, path in files_by_height(folder):
        if z <= height_mm:
            path.unlink()


def resample_slices(folder: Path, thickness_mm: float) -> None:
    """The series rewritten with ``thickness_mm`` slices (linear along z), as a scanner
    reconstructing thicker slices would deliver it: new positions, new SOP instances."""
    files = files_by_height(folder)
    template = pydicom.dcmread(files[0][1])
    volume = np.stack([pydicom.dcmread(p).pixel_array.astype(np.float64) for _, p in files])
    heights = np.array([z for z, _ in files])
    new_heights = np.arange(heights[0], heights[-1] + 1e-6, thickness_mm)
    series = generate_uid()
    for path in folder.iterdir():
        path.unlink()
    for k, z in enumerate(new_heights):
        upper = int(np.clip(np.searchsorted(heights, z), 1, len(heights) - 1))
        w = (z - heights[upper - 1]) / (heights[upper] - heights[upper - 1])
        stored = (1 - w) * volume[upper - 1] + w * volume[upper]
        ds = template.copy()
        ds.PixelData = np.round(stored).astype(template.pixel_array.dtype).tobytes()
        ds.ImagePositionPatient = [*template.ImagePositionPatient[:2], float(z)]
        ds.SliceLocation = float(z)
        ds.SliceThickness = thickness_mm
        ds.InstanceNumber = k + 1
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{k:04d}.dcm")


def top_of_lower_pelvis_mm(raw: Path) -> float:
    """Height of the highest slice of the truth's lower pelvis (label 3): the acetabulum and
    everything below it lie at or under it."""
    label = sitk.ReadImage(str(raw / "label.nii.gz"))
    top = int(np.flatnonzero((sitk.GetArrayViewFromImage(label) == 3).any(axis=(1, 2))).max())
    return float(label.TransformIndexToPhysicalPoint((0, 0, top))[2])


def qa_of(bundle, raw: Path, tmp_path: Path, plant) -> dict:
    ct = tmp_path / "CT"
    shutil.copytree(raw / "CT", ct)
    plant(ct)
    out = PredictionPaths.in_folder(tmp_path / "out")
    out.spet.parent.mkdir()
    predict_ct_only("QA01", ct, bundle, out)
    return json.loads(out.assessment.qa.read_text())


def fired(qa: dict) -> dict[str, str]:
    return {r["check"]: r["level"] for r in qa["reasons"]}


def test_the_clean_series_fires_no_input_check(bundle, raw_patient, tmp_path):
    qa = qa_of(bundle, raw_patient, tmp_path, lambda ct: None)
    assert not set(fired(qa)) & INPUT_CHECKS, qa["reasons"]
    assert qa["training_patients"] >= 3


def test_hu_shifted_by_200_fails_the_calibration(bundle, raw_patient, tmp_path):
    qa = qa_of(bundle, raw_patient, tmp_path, lambda ct: shift_hu(ct, 200.0))
    assert fired(qa).get("hu_calibration") == "fail" and qa["verdict"] == "fail"
    assert qa["measurements"]["air_peak_hu"] == pytest.approx(-800, abs=15)


def test_a_field_of_view_cut_above_the_acetabulum_fails(bundle, raw_patient, tmp_path):
    height = top_of_lower_pelvis_mm(raw_patient)
    qa = qa_of(bundle, raw_patient, tmp_path, lambda ct: cut_above(ct, height))
    assert fired(qa).get("field_of_view") == "fail" and qa["verdict"] == "fail"
    assert "hu_calibration" not in fired(qa)


def test_a_10_mm_slice_series_fails_the_geometry(bundle, raw_patient, tmp_path):
    qa = qa_of(bundle, raw_patient, tmp_path, lambda ct: resample_slices(ct, 10.0))
    assert fired(qa).get("geometry") == "fail" and qa["verdict"] == "fail"
    assert qa["measurements"]["slice_thickness_mm"] == pytest.approx(10.0)
