"""Synthetic PET-CT cohort: determinism, DICOM correctness, and the ground truth it promises."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from abmseg.synth import PRESETS, generate_cohort, simulate_patient
from abmseg.synth.anatomy import Tissue

SEED = 7


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read_series(folder: Path) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """Datasets sorted along z and the rescaled (z, y, x) float64 volume, each slice's own scale."""
    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    volume = np.stack(
        [
            ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            for ds in datasets
        ]
    )
    return datasets, volume


def _seconds(tm: str) -> float:
    return int(tm[0:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cohort"), n_patients=2, seed=SEED)


@pytest.fixture(scope="module")
def patient1():
    return simulate_patient(SEED, 1, "tiny")


def test_same_seed_same_bytes_and_prefix_stable(cohort: Path, tmp_path: Path) -> None:
    again = generate_cohort(tmp_path / "again", n_patients=2, seed=SEED)
    assert _digest(again.parent) == _digest(cohort.parent)
    single = generate_cohort(tmp_path / "single", n_patients=1, seed=SEED)
    assert _digest(single.parent / "SYN001") == _digest(cohort.parent / "SYN001")
    other = generate_cohort(tmp_path / "other", n_patients=1, seed=SEED + 1)
    ours = set(_digest(cohort.parent / "SYN001").values())
    assert not ours & set(_digest(other.parent / "SYN001").values())


def test_sheet_lists_relative_existing_paths(cohort: Path) -> None:
    sheet = pd.read_csv(cohort, sep="\t", dtype=str)
    assert list(sheet.columns) == ["patient_id", "ct", "pet", "label"]
    assert list(sheet.patient_id) == ["SYN001", "SYN002"]
    for row in sheet.itertuples():
        assert (row.ct, row.pet, row.label) == (
            f"{row.patient_id}/CT",
            f"{row.patient_id}/PET",
            f"{row.patient_id}/label.nii.gz",
        )
        for rel in (row.ct, row.pet, row.label):
            assert not Path(rel).is_absolute()
            assert (cohort.parent / rel).exists()
    assert not list(cohort.parent.glob(".*")), "no temporary folders left behind"


def test_files_are_dicom_part10_with_unordered_names(cohort: Path) -> None:
    folder = cohort.parent / "SYN001" / "CT"
    paths = sorted(folder.iterdir())
    raw = paths[0].read_bytes()
    assert raw[128:132] == b"DICM"
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    instance_by_name = [int(pydicom.dcmread(p).InstanceNumber) for p in paths]
    assert instance_by_name != sorted(instance_by_name)


def test_ct_geometry_and_label_grid(cohort: Path) -> None:
    preset = PRESETS["tiny"]
    datasets, _ = _read_series(cohort.parent / "SYN001" / "CT")
    assert len(datasets) == preset.ct_slices
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
    np.testing.assert_allclose(np.diff(z), preset.ct_slice_mm)
    assert z[0] == 0.0
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, len(datasets) + 1))
    first = datasets[0]
    assert [float(v) for v in first.PixelSpacing] == [preset.ct_pixel_mm] * 2
    assert (first.Rows, first.Columns) == (preset.ct_matrix, preset.ct_matrix)
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)

    label = sitk.ReadImage(str(cohort.parent / "SYN001" / "label.nii.gz"))
    assert label.GetSize() == (first.Columns, first.Rows, len(datasets))
    np.testing.assert_allclose(label.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
    np.testing.assert_allclose(
        label.GetSpacing(), [preset.ct_pixel_mm, preset.ct_pixel_mm, preset.ct_slice_mm]
    )
    np.testing.assert_allclose(label.GetDirection(), np.eye(3).ravel())


def test_pet_geometry_and_shared_study(cohort: Path) -> None:
    preset = PRESETS["tiny"]
    ct, _ = _read_series(cohort.parent / "SYN001" / "CT")
    pet, _ = _read_series(cohort.parent / "SYN001" / "PET")
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in pet])
    np.testing.assert_allclose(np.diff(z), preset.pet_slice_mm)
    ct_top = float(ct[-1].ImagePositionPatient[2])
    assert z[0] == pytest.approx(-2 * preset.pet_slice_mm)
    assert z[-1] == pytest.approx(ct_top + 2 * preset.pet_slice_mm)
    first = pet[0]
    assert first.Modality == "PT"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert (first.Rows, first.Columns) == (preset.pet_matrix, preset.pet_matrix)
    # Same x/y centre for both grids.
    for ds in (ct[0], first):
        half = (ds.Columns - 1) / 2 * float(ds.PixelSpacing[1])
        assert float(ds.ImagePositionPatient[0]) + half == pytest.approx(0.0)
    assert first.StudyInstanceUID == ct[0].StudyInstanceUID
    assert first.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert first.SeriesInstanceUID != ct[0].SeriesInstanceUID
    assert [int(ds.ImageIndex) for ds in pet] == list(range(1, len(pet) + 1))
    assert {int(ds.NumberOfSlices) for ds in pet} == {len(pet)}
    assert list(first.CorrectedImage) == ["ATTN", "DECY"]
    assert (first.Units, first.DecayCorrection) == ("BQML", "START")
    other = pydicom.dcmread(next((cohort.parent / "SYN002" / "CT").iterdir()))
    assert other.StudyInstanceUID != first.StudyInstanceUID
    assert other.PatientID != first.PatientID
    assert other.PatientID.startswith("MRN") and "SYN" not in other.PatientID
    assert str(first.PatientName) == "Quillfeather^" + str(first.PatientName).split("^")[1]


def test_ct_numbers(cohort: Path, patient1) -> None:
    datasets, hu = _read_series(cohort.parent / "SYN001" / "CT")
    assert {float(ds.RescaleSlope) for ds in datasets} == {1.0}
    assert {float(ds.RescaleIntercept) for ds in datasets} == {-1024.0}
    assert abs(hu[:, :8, :8].mean() + 1000) < 5
    np.testing.assert_array_equal(hu, patient1.ct_stored.astype(np.float64) - 1024)
    tissue = patient1.anatomy.tissue[patient1.ct_slab]
    active = patient1.label > 0
    yellow = (tissue == Tissue.YELLOW) & ~active
    red_minus_yellow = hu[active].mean() - hu[yellow].mean()
    print(f"red - yellow marrow: {red_minus_yellow:.1f} HU")
    assert red_minus_yellow > 60


def test_pet_suv_from_tags(cohort: Path, patient1) -> None:
    truth = json.loads((cohort.parent / "SYN001" / "truth.json").read_text())
    datasets, bqml = _read_series(cohort.parent / "SYN001" / "PET")
    ds = datasets[0]
    info = ds.RadiopharmaceuticalInformationSequence[0]
    assert info.Radiopharmaceutical == "Fluorodeoxyglucose"
    assert str(info.RadiopharmaceuticalStartDateTime).endswith(info.RadiopharmaceuticalStartTime)
    assert {(d.AcquisitionDate, d.AcquisitionTime) for d in datasets} == {
        (ds.SeriesDate, ds.SeriesTime)
    }
    elapsed = _seconds(ds.SeriesTime) - _seconds(info.RadiopharmaceuticalStartTime)
    assert 50 * 60 <= elapsed <= 75 * 60
    assert elapsed == truth["uptake_seconds"]
    decayed = float(info.RadionuclideTotalDose) * 2 ** (-elapsed / float(info.RadionuclideHalfLife))
    suv = bqml / (decayed / (float(ds.PatientWeight) * 1000))

    # Matches the simulated PET to within the per-slice quantization step.
    slopes = np.array([float(d.RescaleSlope) for d in datasets])
    step = slopes[:, None, None] / (decayed / (float(ds.PatientWeight) * 1000))
    assert np.all(np.abs(suv - patient1.pet_suv) <= 0.51 * step + 1e-6)
    assert suv.min() >= 0
    assert suv.max() >= 0.9 * truth["bladder_suv"] >= 9
    # Noise is what the truth file says.
    resid = (suv - patient1.pet_clean_suv)[patient1.pet_clean_suv > 0.5]
    sd_model = (0.08 * np.sqrt(patient1.pet_clean_suv) + 0.02)[patient1.pet_clean_suv > 0.5]
    assert np.std(resid / sd_model) == pytest.approx(1.0, abs=0.1)


def test_true_suv_and_label_definition(patient1) -> None:
    an = patient1.anatomy
    red = an.tissue == Tissue.RED
    marrow = red | (an.tissue == Tissue.YELLOW)
    assert an.suv[red].min() >= 2.0 and an.suv[red].max() <= 4.0
    assert an.suv[an.tissue == Tissue.BLADDER].min() >= 10
    mean = an.suv[marrow].mean()
    expected = np.where(marrow & (an.suv >= mean), an.region, 0)
    np.testing.assert_array_equal(an.label, expected)


def test_per_slice_rescale_slope(cohort: Path) -> None:
    datasets, _ = _read_series(cohort.parent / "SYN001" / "PET")
    slopes = [float(ds.RescaleSlope) for ds in datasets]
    assert len(set(slopes)) > len(slopes) // 2
    for ds in datasets:
        assert float(ds.RescaleIntercept) == 0
        assert ds.pixel_array.max() == pytest.approx(32000, abs=1)


def test_motion_transform_in_truth(cohort: Path, patient1) -> None:
    truth = json.loads((cohort.parent / "SYN001" / "truth.json").read_text())
    motion = truth["motion"]
    assert max(abs(a) for a in motion["angles_rad"]) <= np.radians(3)
    assert max(abs(t) for t in motion["translation_mm"]) <= 6
    transform = sitk.Euler3DTransform()
    transform.SetCenter(motion["center"])
    transform.SetRotation(*motion["angles_rad"])
    transform.SetTranslation(motion["translation_mm"])

    # The bladder seen in PET, mapped through T, lands on the bladder of the CT anatomy.
    an = patient1.anatomy
    zyx = np.argwhere(an.tissue == Tissue.BLADDER).mean(axis=0)
    g = an.grid
    ct_centre = [g.origin[i] + g.spacing[i] * zyx[2 - i] for i in range(3)]
    pet = patient1.pet_clean_suv
    mask = pet > 0.5 * truth["bladder_suv"]
    zyx = (np.argwhere(mask) * pet[mask][:, None]).sum(axis=0) / pet[mask].sum()
    pg = patient1.pet_grid
    pet_centre = [pg.origin[i] + pg.spacing[i] * zyx[2 - i] for i in range(3)]
    np.testing.assert_allclose(transform.TransformPoint(pet_centre), ct_centre, atol=2.5)
    inverse = transform.GetInverse()
    np.testing.assert_allclose(inverse.TransformPoint(ct_centre), pet_centre, atol=2.5)


def test_bed_is_separate_from_body(cohort: Path) -> None:
    truth = json.loads((cohort.parent / "SYN001" / "truth.json").read_text())
    datasets, hu = _read_series(cohort.parent / "SYN001" / "CT")
    components, _ = ndimage.label(hu > -500, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = int(sizes.argmax())
    y = float(datasets[0].ImagePositionPatient[1]) + float(datasets[0].PixelSpacing[0]) * np.arange(
        hu.shape[1]
    )
    y0, y1 = truth["bed_y_range_mm"]
    rows = (y >= y0) & (y <= y1)
    assert rows.any()
    bed = set(np.unique(components[:, rows, :])) - {0}
    assert len(bed) == 1 and body not in bed
    (bed_id,) = bed
    assert (components[:, rows, :] == bed_id).any(axis=(1, 2)).all(), "bed spans all slices"


@pytest.mark.parametrize("seed", range(10))
def test_every_label_present_tiny(seed: int) -> None:
    for index in (1, 2):
        counts = np.bincount(simulate_patient(seed, index, "tiny").label.ravel(), minlength=4)
        assert (counts[1:] > 0).all(), counts


def test_truth_counts_match_label(cohort: Path) -> None:
    folder = cohort.parent / "SYN002"
    truth = json.loads((folder / "truth.json").read_text())
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz")))
    counts = np.bincount(label.ravel(), minlength=4)
    assert truth["label_voxels"] == {
        "spine": counts[1],
        "ilium": counts[2],
        "lower_pelvis": counts[3],
    }
    assert label.dtype == np.uint8
    for key in ("weight_kg", "total_dose_bq", "half_life_s", "age", "active_fraction"):
        assert key in truth


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        generate_cohort(tmp_path, 1, 0, preset="huge")


def test_tiny_cohort_timing(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_cohort(tmp_path, n_patients=6, seed=0)
    print(f"tiny cohort, 6 patients: {time.perf_counter() - start:.2f} s")


@pytest.mark.slow
def test_paper_patient(tmp_path: Path) -> None:
    preset = PRESETS["paper"]
    start = time.perf_counter()
    sheet = generate_cohort(tmp_path, n_patients=1, seed=SEED, preset="paper")
    print(f"paper preset, 1 patient: {time.perf_counter() - start:.2f} s")
    folder = sheet.parent / "SYN001"
    ct, _ = _read_series(folder / "CT")
    pet, _ = _read_series(folder / "PET")
    assert len(ct) == preset.ct_slices and len(pet) == preset.ct_slices + 4
    assert (ct[0].Rows, pet[0].Rows) == (512, 256)
    assert float(pet[0].PixelSpacing[0]) == preset.pet_pixel_mm
    label = sitk.ReadImage(str(folder / "label.nii.gz"))
    np.testing.assert_allclose(label.GetSpacing(), [0.9765625, 0.9765625, 2.5])
    counts = np.bincount(sitk.GetArrayFromImage(label).ravel(), minlength=4)
    assert (counts[1:] > 0).all(), counts
