"""Conversion against independent references: the generator's geometry, dcm2niix, hand SUV."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from abmseg.io.dicom_series import list_dicom_files

DCM2NIIX = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")


def corners(image: sitk.Image) -> np.ndarray:
    """World positions of the 8 corner voxel centres, as a sorted set of points."""
    size = image.GetSize()
    points = [
        image.TransformIndexToPhysicalPoint([i * (s - 1) for i, s in zip(c, size, strict=True)])
        for c in itertools.product((0, 1), repeat=3)
    ]
    return np.array(sorted(np.round(points, 3).tolist()))


def assert_geometry(image: sitk.Image, grid: dict) -> None:
    assert list(image.GetSize()) == grid["size_xyz"]
    np.testing.assert_allclose(image.GetSpacing(), grid["spacing_xyz_mm"], atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), grid["origin_lps_mm"], atol=1e-3)
    np.testing.assert_allclose(image.GetDirection(), grid["direction"], atol=1e-6)


def run_dcm2niix(series: Path, out: Path) -> sitk.Image:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [DCM2NIIX, "-z", "n", "-b", "n", "-o", str(out), "-f", "series", str(series)],
        check=True,
        capture_output=True,
    )
    (nifti,) = out.glob("series*.nii")
    return sitk.ReadImage(str(nifti), sitk.sitkFloat64)


def test_ct_geometry_matches_the_generator(converted):
    ct = sitk.ReadImage(str(converted["paths"].ct))
    assert_geometry(ct, converted["truth"]["ct_grid"])


def test_pet_geometry_matches_the_generator(converted):
    pet = sitk.ReadImage(str(converted["paths"].pet_suv))
    assert_geometry(pet, converted["truth"]["pet_grid"])


def test_label_lies_on_the_ct_grid(converted):
    label = sitk.ReadImage(str(converted["paths"].label))
    assert_geometry(label, converted["truth"]["ct_grid"])
    assert label.GetPixelID() == sitk.sitkUInt8
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=4)
    truth_counts = converted["truth"]["label_voxels"]
    assert sorted(counts[1:].tolist()) == sorted(truth_counts.values())


def test_ct_equals_dcm2niix_in_world_space(converted, tmp_path):
    ours = sitk.ReadImage(str(converted["paths"].ct), sitk.sitkFloat64)
    theirs = run_dcm2niix(converted["raw"] / "CT", tmp_path / "d2n")
    np.testing.assert_allclose(corners(ours), corners(theirs), atol=1e-2)
    on_our_grid = sitk.Resample(theirs, ours, sitk.Transform(), sitk.sitkNearestNeighbor, -5000)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_our_grid), sitk.GetArrayFromImage(ours))


def test_pet_equals_dcm2niix_activity_times_suv_factor(converted, tmp_path):
    ours = sitk.ReadImage(str(converted["paths"].pet_suv), sitk.sitkFloat64)
    theirs = run_dcm2niix(converted["raw"] / "PET", tmp_path / "d2n")
    np.testing.assert_allclose(corners(ours), corners(theirs), atol=1e-2)
    on_our_grid = sitk.Resample(theirs, ours, sitk.Transform(), sitk.sitkNearestNeighbor, -1)
    factor = converted["meta"]["pet"]["suv"]["factor"]
    expected = sitk.GetArrayFromImage(on_our_grid) * factor
    actual = sitk.GetArrayFromImage(ours)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * actual.max())


def _time_of_day(date: str, time: str) -> dt.datetime:
    return dt.datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S")


def test_suv_equals_a_hand_computation_from_the_tags(converted):
    files = list_dicom_files(converted["raw"] / "PET")
    ds = pydicom.dcmread(files[len(files) // 2])
    info = ds.RadiopharmaceuticalInformationSequence[0]
    injection = dt.datetime.strptime(
        str(info.RadiopharmaceuticalStartDateTime).split(".")[0], "%Y%m%d%H%M%S"
    )
    scan = _time_of_day(str(ds.SeriesDate), str(ds.SeriesTime))
    seconds = (scan - injection).total_seconds()
    decayed = float(info.RadionuclideTotalDose) * 0.5 ** (
        seconds / float(info.RadionuclideHalfLife)
    )
    by_hand = ds.pixel_array * float(ds.RescaleSlope) * float(ds.PatientWeight) * 1000 / decayed

    pet = sitk.ReadImage(str(converted["paths"].pet_suv))
    z = round((float(ds.ImagePositionPatient[2]) - pet.GetOrigin()[2]) / pet.GetSpacing()[2])
    ours = sitk.GetArrayFromImage(pet)[z]
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5, atol=1e-6)
    assert by_hand.max() > 1.0, "the chosen slice should hold tissue, not only air"


def test_suv_factor_matches_the_generator_truth(converted):
    suv = converted["meta"]["pet"]["suv"]
    truth = converted["truth"]
    assert suv["decay_seconds"] == pytest.approx(truth["uptake_seconds"], abs=1e-3)
    expected = truth["weight_kg"] * 1000 / truth["decayed_dose_bq"]
    assert suv["factor"] == pytest.approx(expected, rel=1e-6)


def test_meta_json_has_no_identity(converted):
    text = converted["paths"].meta.read_text()
    ds = pydicom.dcmread(list_dicom_files(converted["raw"] / "CT")[0])
    for secret in (
        str(ds.PatientName),
        str(ds.PatientBirthDate),
        str(ds.AccessionNumber),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.StudyDate),
    ):
        assert secret not in text
    meta = json.loads(text)
    assert meta["patient_id"] == "SYN001"
