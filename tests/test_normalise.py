"""CT windowing and SUV scaling to [-1, 1], and the per-patient normalisation on NIfTIs."""

import numpy as np
import pytest
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.preprocess.normalise import (
    NormaliseSettings,
    normalise_patient,
    scale_suv,
    window_ct,
)


def test_window_ct_maps_window_edges_and_centre():
    level, width = 40.0, 400.0
    hu = np.array([level - width / 2, level, level + width / 2, level + width / 4], dtype=np.int16)
    out = window_ct(hu, level, width)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0, 0.5], atol=1e-6)


def test_window_ct_is_linear_inside_and_clips_outside():
    level, width = 100.0, 1200.0
    hu = np.array([-3000.0, -1000.0, -500.0, -200.0, 400.0, 700.0, 701.0, 3000.0])
    out = window_ct(hu, level, width)
    # Reference: 2 * (hu - (level - width / 2)) / width - 1, clipped to [-1, 1].
    expected = np.clip(2 * (hu + 500.0) / 1200.0 - 1, -1, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0] == -1.0 and out[-1] == 1.0
    assert out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_window_ct_keeps_shape():
    hu = np.zeros((3, 4, 5), dtype=np.int16)
    assert window_ct(hu, 0.0, 100.0).shape == (3, 4, 5)


def test_scale_suv_maps_zero_and_ceiling():
    suv = np.array([0.0, 5.0, 10.0, 2.5, -1.0, 25.0], dtype=np.float64)
    out = scale_suv(suv, 10.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0, -0.5, -1.0, 1.0], atol=1e-6)


def _image(array, spacing, origin, direction):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.fixture
def cropped(tmp_path):
    rng = np.random.default_rng(0)
    shape = (4, 5, 6)
    spacing = (0.9, 1.1, 2.5)
    origin = (-12.5, 30.0, 101.25)
    # A rotation about z by 90 degrees: columns are the axis directions.
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    hu = rng.integers(-1100, 1500, size=shape).astype(np.int16)
    suv = rng.uniform(0, 15, size=shape).astype(np.float32)
    label = rng.integers(0, 4, size=shape).astype(np.uint8)
    paths = {}
    for name, array in (("ct", hu), ("pet", suv), ("label", label)):
        paths[name] = tmp_path / "crop" / f"{name}.nii.gz"
        paths[name].parent.mkdir(exist_ok=True)
        sitk.WriteImage(_image(array, spacing, origin, direction), str(paths[name]))
    return paths, {"ct": hu, "pet": suv, "label": label}, (spacing, origin, direction)


def test_normalise_patient_keeps_geometry_and_values(cropped, tmp_path):
    paths, arrays, (spacing, origin, direction) = cropped
    out = {name: tmp_path / "norm" / f"{name}.nii.gz" for name in ("ct", "pet", "label")}
    settings = NormaliseSettings(ct_level_hu=100.0, ct_width_hu=1200.0, suv_ceiling=10.0)
    normalise_patient(
        paths["ct"], paths["pet"], paths["label"], out["ct"], out["pet"], out["label"], settings
    )
    images = {name: sitk.ReadImage(str(path)) for name, path in out.items()}
    for image in images.values():
        assert image.GetSize() == (6, 5, 4)
        np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), direction, atol=1e-6)

    ct = sitk.GetArrayFromImage(images["ct"])
    expected_ct = np.clip((arrays["ct"].astype(np.float64) + 500.0) / 1200.0 * 2 - 1, -1, 1)
    np.testing.assert_allclose(ct, expected_ct, atol=1e-6)
    assert ct.dtype == np.float32

    pet = sitk.GetArrayFromImage(images["pet"])
    np.testing.assert_allclose(pet, np.clip(arrays["pet"] / 10.0 * 2 - 1, -1, 1), atol=1e-6)
    assert pet.dtype == np.float32

    assert images["label"].GetPixelID() == sitk.sitkUInt8
    label = sitk.GetArrayFromImage(images["label"])
    np.testing.assert_array_equal(label, arrays["label"])
    assert {p.name for p in (tmp_path / "norm").iterdir()} == {
        "ct.nii.gz",
        "pet.nii.gz",
        "label.nii.gz",
    }


def test_normalise_patient_int16_label_becomes_uint8(cropped, tmp_path):
    paths, arrays, (spacing, origin, direction) = cropped
    label16 = arrays["label"].astype(np.int16)
    sitk.WriteImage(_image(label16, spacing, origin, direction), str(paths["label"]))
    out = [tmp_path / f"{n}.nii.gz" for n in ("ct", "pet", "label")]
    normalise_patient(paths["ct"], paths["pet"], paths["label"], *out, NormaliseSettings())
    label = sitk.ReadImage(str(out[2]))
    assert label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), arrays["label"])


def test_normalise_patient_unreadable_input_names_the_file(cropped, tmp_path):
    paths, _, _ = cropped
    paths["pet"].write_bytes(b"not a nifti")
    out = [tmp_path / f"{n}.nii.gz" for n in ("ct", "pet", "label")]
    with pytest.raises(PatientDataError) as info:
        normalise_patient(
            paths["ct"], paths["pet"], paths["label"], *out, NormaliseSettings(), patient="P3"
        )
    message = str(info.value)
    assert "P3" in message
    assert str(paths["pet"]) in message
    assert "Fix:" in message
