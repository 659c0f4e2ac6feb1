"""Body mask, bed removal and the ROI box on a synthetic HU phantom."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.preprocess.roi import CropSettings, body_mask, crop_image, crop_patient, roi_box

SHAPE = (20, 80, 100)  # z, y, x
SPACING_XYZ = (0.8, 1.5, 3.0)


def _phantom():
    """Air, an elliptic body (0 HU) with a gas pocket (-900 HU), a bed plate below (+200 HU).

    Returns the HU volume, the body (gas included), the bed, and the gas pocket.
    """
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    body = ((x - 50) / 30.0) ** 2 + ((y - 35) / 20.0) ** 2 <= 1.0
    gas = (((x - 45) / 6.0) ** 2 + ((y - 33) / 4.0) ** 2 <= 1.0) & (z >= 5) & (z < 15)
    # Body spans y 15..55; air gap at y 56..61; bed plate at y 62..65, wider than the body in x.
    bed = (y >= 62) & (y < 66) & (x >= 5) & (x < 95)
    hu[body] = 0.0
    hu[gas] = -900.0
    hu[bed] = 200.0
    assert not (body & bed).any()
    assert (gas & body).sum() == gas.sum()
    return hu, body, bed, gas


def _bbox(mask):
    """Independent half-open bounding box from np.nonzero, keyed x/y/z."""
    z, y, x = np.nonzero(mask)
    return {
        "x": [int(x.min()), int(x.max()) + 1],
        "y": [int(y.min()), int(y.max()) + 1],
        "z": [int(z.min()), int(z.max()) + 1],
    }


def test_body_mask_fills_gas_and_drops_the_bed():
    hu, body, bed, gas = _phantom()
    mask, threshold = body_mask(hu)
    assert mask.shape == SHAPE
    assert mask.dtype == bool
    assert -1000.0 < threshold < 0.0
    np.testing.assert_array_equal(mask, body)
    assert mask[gas].all()
    assert not mask[bed].any()


def test_body_mask_of_pure_air_is_empty():
    mask, _ = body_mask(np.full((4, 10, 12), -1000.0, dtype=np.float32))
    assert mask.shape == (4, 10, 12)
    assert not mask.any()


def test_roi_box_without_margin_is_the_bounding_box():
    _, body, _, _ = _phantom()
    assert roi_box(body, SPACING_XYZ, (0.0, 0.0, 0.0)) == _bbox(body)
    assert _bbox(body) == {"x": [20, 81], "y": [15, 56], "z": [0, 20]}


def test_roi_box_of_a_small_blob():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[3:7, 10:12, 40:45] = True
    assert roi_box(mask, (1.0, 1.0, 1.0), (0, 0, 0)) == {
        "x": [40, 45],
        "y": [10, 12],
        "z": [3, 7],
    }


def test_roi_box_margin_grows_by_ceil_and_clips_at_edges():
    _, body, _, _ = _phantom()
    margin = (10.0, 10.0, 6.0)
    box = roi_box(body, SPACING_XYZ, margin)
    ref = _bbox(body)
    grow = [math.ceil(m / s) for m, s in zip(margin, SPACING_XYZ, strict=True)]
    assert grow == [13, 7, 2]
    assert box["x"] == [ref["x"][0] - 13, ref["x"][1] + 13] == [7, 94]
    assert box["y"] == [ref["y"][0] - 7, ref["y"][1] + 7] == [8, 63]
    # The body fills every slice: the z margin is clipped to the volume.
    assert box["z"] == [0, SHAPE[0]]


def test_roi_box_margin_clips_at_both_ends():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1:4, 1:5, 2:5] = True
    box = roi_box(mask, (1.0, 1.0, 1.0), (100.0, 1.0, 0.5))
    assert box == {"x": [0, 7], "y": [0, 6], "z": [0, 5]}


def _sitk_image(array, spacing=SPACING_XYZ, origin=(-40.0, 12.5, 300.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def test_crop_image_keeps_world_positions():
    array = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    image = _sitk_image(array, direction=direction)
    box = {"x": [7, 94], "y": [8, 63], "z": [3, 17]}
    cropped = crop_image(image, box)
    assert cropped.GetSize() == (87, 55, 14)
    np.testing.assert_allclose(
        cropped.TransformIndexToPhysicalPoint((0, 0, 0)),
        image.TransformIndexToPhysicalPoint((7, 8, 3)),
        atol=1e-9,
    )
    np.testing.assert_allclose(
        cropped.TransformIndexToPhysicalPoint((86, 54, 13)),
        image.TransformIndexToPhysicalPoint((93, 62, 16)),
        atol=1e-9,
    )
    assert cropped.GetSpacing() == image.GetSpacing()
    assert cropped.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(cropped), array[3:17, 8:63, 7:94])


@pytest.fixture
def converted(tmp_path):
    hu, body, bed, gas = _phantom()
    rng = np.random.default_rng(3)
    pet = rng.uniform(0.5, 3.0, size=SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[4:16, 25:40, 40:55] = 1
    label[8:12, 30:34, 60:66] = 2
    paths = {}
    for name, array in (("ct", hu.astype(np.int16)), ("pet", pet), ("label", label)):
        paths[name] = tmp_path / "in" / f"{name}.nii.gz"
        paths[name].parent.mkdir(exist_ok=True)
        sitk.WriteImage(_sitk_image(array), str(paths[name]))
    arrays = {"ct": hu, "pet": pet, "label": label, "body": body, "bed": bed}
    return paths, arrays


def _outputs(tmp_path):
    folder = tmp_path / "crop"
    return [folder / n for n in ("ct.nii.gz", "pet.nii.gz", "label.nii.gz", "roi.json")]


def test_crop_patient_end_to_end(converted, tmp_path):
    paths, arrays = converted
    out = _outputs(tmp_path)
    settings = CropSettings(margin_mm=(10.0, 10.0, 0.0), clear_outside_body=True)
    roi = crop_patient(paths["ct"], paths["pet"], paths["label"], *out, settings, patient="P1")

    box = {"x": [7, 94], "y": [8, 63], "z": [0, 20]}
    assert roi["box_ct_index"] == box
    written = json.loads(out[3].read_text())
    assert written["box_ct_index"] == box
    assert written["patient_id"] == "P1"
    assert written["body_voxels"] == int(arrays["body"].sum())
    assert written["label_voxels_outside_box"] == 0
    assert written["ct_size_xyz"] == [100, 80, 20]
    assert written["cropped_size_xyz"] == [87, 55, 20]

    sl = (slice(0, 20), slice(8, 63), slice(7, 94))
    ct_in = sitk.ReadImage(str(paths["ct"]))
    ct = sitk.ReadImage(str(out[0]))
    np.testing.assert_allclose(
        ct.TransformIndexToPhysicalPoint((0, 0, 0)),
        ct_in.TransformIndexToPhysicalPoint((7, 8, 0)),
        atol=1e-4,
    )
    ct_arr = sitk.GetArrayFromImage(ct)
    body_c = arrays["body"][sl]
    bed_c = arrays["bed"][sl]
    assert bed_c.any()  # the y margin reaches the bed: it must have been cleared
    assert ct_arr[~body_c].max() <= -500
    assert (ct_arr[bed_c] == -1000).all()
    np.testing.assert_array_equal(ct_arr[body_c], arrays["ct"][sl][body_c])

    pet_arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out[1])))
    assert (pet_arr[~body_c] == 0).all()
    np.testing.assert_allclose(pet_arr[body_c], arrays["pet"][sl][body_c])

    label = sitk.ReadImage(str(out[2]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), arrays["label"][sl])
    assert label.GetOrigin() == pytest.approx(ct.GetOrigin(), abs=1e-4)


def test_crop_patient_without_clearing_keeps_the_bed(converted, tmp_path):
    paths, arrays = converted
    out = _outputs(tmp_path)
    settings = CropSettings(margin_mm=(10.0, 10.0, 0.0), clear_outside_body=False)
    crop_patient(paths["ct"], paths["pet"], paths["label"], *out, settings)
    ct_arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out[0])))
    np.testing.assert_array_equal(ct_arr, arrays["ct"][:, 8:63, 7:94])


def test_crop_patient_without_body_raises(converted, tmp_path):
    paths, _ = converted
    air = np.full(SHAPE, -1000, dtype=np.int16)
    sitk.WriteImage(_sitk_image(air), str(paths["ct"]))
    out = _outputs(tmp_path)
    with pytest.raises(PatientDataError) as info:
        crop_patient(paths["ct"], paths["pet"], paths["label"], *out, CropSettings(), "P2")
    message = str(info.value)
    assert "P2" in message
    assert str(paths["ct"]) in message
    assert "no body" in message
    assert not any(path.exists() for path in out)


def test_crop_patient_refuses_a_label_off_the_ct_grid(converted, tmp_path):
    paths, _ = converted
    sitk.WriteImage(_sitk_image(np.zeros((20, 80, 99), dtype=np.uint8)), str(paths["label"]))
    with pytest.raises(PatientDataError) as info:
        crop_patient(paths["ct"], paths["pet"], paths["label"], *_outputs(tmp_path), CropSettings())
    assert str(paths["label"]) in str(info.value)
    assert "not on the CT grid" in str(info.value)
