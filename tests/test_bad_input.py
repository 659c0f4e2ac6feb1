"""Each kind of bad input ends in a PatientDataError naming the patient, the file and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import list_dicom_files
from abmseg.preprocess.convert import ConvertedPaths, convert_patient


def run_convert(raw: Path, out: Path, ct: Path | None = None, pet: Path | None = None):
    paths = ConvertedPaths(
        out / "ct.nii.gz", out / "pet_suv.nii.gz", out / "label.nii.gz", out / "meta.json"
    )
    return convert_patient(
        "SYN001", ct or raw / "CT", pet or raw / "PET", raw / "label.nii.gz", paths
    )


def expect_error(raw: Path, out: Path, path_part: str, words: str, **kwargs) -> PatientDataError:
    with pytest.raises(PatientDataError) as info:
        run_convert(raw, out, **kwargs)
    message = str(info.value)
    assert "SYN001" in message
    assert path_part in message
    assert words.lower() in message.lower()
    assert "Fix:" in message
    assert not any(out.glob("*.nii.gz")), "no output may be written for a refused patient"
    return info.value


def edit_pet(raw: Path, edit) -> None:
    for path in list_dicom_files(raw / "PET"):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def middle_slice(folder: Path) -> Path:
    files = list_dicom_files(folder)
    ordered = sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    return ordered[len(ordered) // 2]


def test_empty_series_folder(patient_copy, tmp_path):
    for path in list_dicom_files(patient_copy / "CT"):
        path.unlink()
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "CT"), "empty")


def test_missing_series_folder(patient_copy, tmp_path):
    shutil.rmtree(patient_copy / "PET")
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "PET"), "does not exist")


def test_two_series_mixed_in_one_folder(patient_copy, tmp_path):
    for path in list_dicom_files(patient_copy / "PET"):
        shutil.copy(path, patient_copy / "CT" / f"pet_{path.name}")
    error = expect_error(patient_copy, tmp_path / "out", str(patient_copy / "CT"), "2 series")
    assert "one series per folder" in error.fix


def test_missing_slice(patient_copy, tmp_path):
    middle_slice(patient_copy / "CT").unlink()
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "CT"), "missing slice")


def test_uneven_spacing(patient_copy, tmp_path):
    path = middle_slice(patient_copy / "CT")
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.0
    ds.save_as(path)
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "CT"), "uneven slice spacing")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda ds: delattr(ds, "PatientWeight"), "patient weight"),
        (
            lambda ds: delattr(
                ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"
            ),
            "injected dose",
        ),
        (
            lambda ds: [
                delattr(ds.RadiopharmaceuticalInformationSequence[0], keyword)
                for keyword in ("RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime")
                if keyword in ds.RadiopharmaceuticalInformationSequence[0]
            ],
            "injection time",
        ),
    ],
    ids=["no-weight", "no-dose", "no-injection-time"],
)
def test_pet_without_suv_tags(patient_copy, tmp_path, edit, words):
    edit_pet(patient_copy, edit)
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "PET"), words)


def test_ct_given_as_pet(patient_copy, tmp_path):
    error = expect_error(
        patient_copy,
        tmp_path / "out",
        str(patient_copy / "CT"),
        "Modality 'CT'",
        pet=patient_copy / "CT",
    )
    assert "'pet' column" in error.fix


def test_corrupt_file(patient_copy, tmp_path):
    victim = middle_slice(patient_copy / "CT")
    victim.write_bytes(b"this is not DICOM at all" * 10)
    expect_error(patient_copy, tmp_path / "out", victim.name, "not a readable DICOM file")


def test_truncated_pixel_data(patient_copy, tmp_path):
    victim = middle_slice(patient_copy / "PET")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])
    expect_error(patient_copy, tmp_path / "out", victim.name, "pixel data holds")


def test_missing_rescale_intercept_is_refused(patient_copy, tmp_path):
    # Type 1 in the CT image module: defaulting it to 0 shifted every HU by 1024.
    victim = middle_slice(patient_copy / "CT")
    ds = pydicom.dcmread(victim)
    del ds.RescaleIntercept
    ds.save_as(victim)
    expect_error(patient_copy, tmp_path / "out", victim.name, "RescaleIntercept is missing")


def test_lost_end_slice_of_pet_is_refused(patient_copy, tmp_path):
    # Geometry cannot see a lost end slice; the PET's NumberOfSlices can.
    files = list_dicom_files(patient_copy / "PET")
    last = max(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    last.unlink()
    expect_error(patient_copy, tmp_path / "out", str(patient_copy / "PET"), "NumberOfSlices")


def test_label_with_unknown_values(patient_copy, tmp_path):
    import SimpleITK as sitk

    label = sitk.ReadImage(str(patient_copy / "label.nii.gz"))
    label[0, 0, 0] = 9
    sitk.WriteImage(label, str(patient_copy / "label.nii.gz"))
    expect_error(patient_copy, tmp_path / "out", "label.nii.gz", "label values [9]")
