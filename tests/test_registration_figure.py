"""The per-patient registration QC figure: planes through the hottest PET region of a CT stored
with a flipped direction and a non-zero origin, in hand-computed mm and slice indices; the
BEFORE column really is the PET as acquired (a blob planted 20 mm away from the registered one
shows there); PASS/FAIL against hand-set limits, in the text and in the PNG's colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.colors import to_rgb
from PIL import Image

from abmseg.evaluate.registration_figure import (
    FILLS,
    WIDTH_PX,
    fused_planes,
    hot_centre,
    registration_figure,
)
from abmseg.preprocess.registration_qc import QcLimits, qc_checks

# The CT: stored with x and y reversed (direction diag(-1, -1, 1)), so index 0 is the patient's
# most left and posterior voxel; physical x = -100 - 4 i, y = -60 - 3 j, z = 200 + 5 k (mm).
CT_SIZE_XYZ = (50, 40, 12)
CT_SPACING = (4.0, 3.0, 5.0)
CT_ORIGIN = (-100.0, -60.0, 200.0)
CT_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
# The registered PET's hot blob (on the CT grid): stored index (30, 20, 6), i.e. at
# x = -100 - 120 = -220, y = -60 - 60 = -120, z = 200 + 30 = 230 mm.
HOT_INDEX_XYZ = (30, 20, 6)
HOT_MM = (-220.0, -120.0, 230.0)
# The acquired PET's blob: 20 mm to the patient's left (+x) of it, on the PET's own grid.
SHIFT_X_MM = 20.0


def _ct() -> sitk.Image:
    """A body ellipse (0 HU) in air, around the hot spot."""
    nx, ny, nz = CT_SIZE_XYZ
    k, j, i = np.indices((nz, ny, nx))
    body = ((i - 25) / 20.0) ** 2 + ((j - 20) / 15.0) ** 2 <= 1
    hu = np.where(body, 0, -1000).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(CT_SPACING)
    image.SetOrigin(CT_ORIGIN)
    image.SetDirection(CT_DIRECTION)
    return image


def _registered(ct: sitk.Image) -> sitk.Image:
    """SUV 1 everywhere, 10 in a 5-voxel box around HOT_INDEX_XYZ."""
    nx, ny, nz = CT_SIZE_XYZ
    suv = np.ones((nz, ny, nx), np.float32)
    i, j, k = HOT_INDEX_XYZ
    suv[k - 2 : k + 3, j - 2 : j + 3, i - 2 : i + 3] = 10.0
    image = sitk.GetImageFromArray(suv)
    image.CopyInformation(ct)
    return image


def _acquired() -> sitk.Image:
    """The PET on its own grid (identity direction, 2 x 2 x 2.5 mm, covering the CT), SUV 1 with
    10 in a box of +-8, +-6, +-10 mm around the hot spot moved SHIFT_X_MM along +x. Its voxel
    centres fall on the CT's, so the identity resampling reads exact values."""
    origin, spacing, size = (-300.0, -180.0, 195.0), (2.0, 2.0, 2.5), (104, 62, 26)
    axes = [o + s * np.arange(n) for o, s, n in zip(origin, spacing, size, strict=True)]
    z, y, x = np.meshgrid(*axes[::-1], indexing="ij")
    cx, cy, cz = HOT_MM[0] + SHIFT_X_MM, HOT_MM[1], HOT_MM[2]
    blob = (np.abs(x - cx) <= 8) & (np.abs(y - cy) <= 6) & (np.abs(z - cz) <= 10)
    image = sitk.GetImageFromArray(np.where(blob, 10.0, 1.0).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _centroid(view: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(view >= 5.0)
    return float(rows.mean()), float(cols.mean())


def test_planes_go_through_the_hot_spot_in_mm_and_planning_ct_indices():
    ct = _ct()
    fused = fused_planes(ct, _acquired(), _registered(ct))
    where = fused.positions
    assert where["centre_from"] == "hottest PET region"
    assert where["point_mm"] == pytest.approx(HOT_MM)
    i, j, k = HOT_INDEX_XYZ
    assert (where["axial"]["mm"], where["axial"]["planning_ct_index"]) == (230.0, k)
    assert (where["coronal"]["mm"], where["coronal"]["planning_ct_index"]) == (-120.0, j)
    assert (where["sagittal"]["mm"], where["sagittal"]["planning_ct_index"]) == (-220.0, i)
    # turned to LPS: x index (-220 - -296) / 4 = 19, y index (-120 - -177) / 3 = 19
    assert fused.shape == (12, 40, 50) and fused.spacing == (5.0, 3.0, 4.0)
    assert _centroid(fused.after[0]) == (19.0, 19.0)


def test_the_before_column_shows_the_pet_as_acquired():
    ct = _ct()
    fused = fused_planes(ct, _acquired(), _registered(ct))
    after_row, after_col = _centroid(fused.after[0])
    before_row, before_col = _centroid(fused.before[0])
    # axial view: columns run to the patient's left (+x), 4 mm each: 20 mm = 5 columns
    assert (before_row, before_col) == (after_row, after_col + SHIFT_X_MM / 4.0)
    # coronal view (rows z, columns x) through y = -120: the same 5 columns, same slices
    assert _centroid(fused.before[1])[1] == _centroid(fused.after[1])[1] + 5.0
    # the sagittal plane x = -220 misses the acquired blob (at -200 +- 8 mm) entirely
    assert fused.before[2].max() == pytest.approx(1.0) and fused.after[2].max() == 10.0


def test_the_centre_falls_back_to_the_body_then_the_volume():
    hu = np.full((5, 9, 11), -1000.0, np.float32)
    hu[0:3, 1:4, 6:9] = 0.0  # off the volume's centre (2, 4, 5)
    assert hot_centre(hu, np.zeros_like(hu)) == ((1, 2, 7), "CT body centre")
    air = np.full((5, 9, 11), -1000.0, np.float32)
    assert hot_centre(air, np.ones_like(air)) == ((2, 4, 5), "volume centre")


def _qc(rotation: float) -> dict:
    return {
        "patient_id": "TEST001",
        "mutual_information_before": 0.5,
        "mutual_information_after": 0.625,
        "transform": {
            "centre_displacement_mm": 12.5,
            "rotation_deg": rotation,
            "scale_min": 0.96875,
            "scale_max": 1.03125,
        },
        "qc_limits": {
            "min_mutual_information_gain": 0.0,
            "max_centre_displacement_mm": 20.0,
            "max_rotation_deg": 4.0,
            "min_scale": 0.9,
            "max_scale": 1.1,
        },
    }


def test_pass_and_fail_against_hand_set_limits():
    checks = qc_checks(_qc(rotation=5.5), QcLimits(**_qc(0.0)["qc_limits"]))
    text = {c.name: (c.value, c.limit, c.passed) for c in checks}
    assert text == {
        "mutual information": ("0.5000 -> 0.6250 (gain +0.1250)", "gain >= +0.0000", True),
        "centre shift": ("12.50 mm", "<= 20 mm", True),
        "rotation": ("5.50 deg", "<= 4 deg", False),
        "scale min": ("0.9688", ">= 0.9", True),
        "scale max": ("1.0312", "<= 1.1", True),
    }


def _colour_pixels(png: Path, colour: str) -> int:
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    target = np.round(np.array(to_rgb(colour)) * 255).astype(int)
    return int(np.all(rgb == target, axis=-1).sum())


@pytest.mark.parametrize("rotation", [2.0, 5.5], ids=["pass", "rotation-fails"])
def test_the_figure_file_and_its_verdict_colours(tmp_path, rotation):
    ct = _ct()
    paths = {"ct": tmp_path / "ct.nii.gz", "pet": tmp_path / "pet.nii.gz"}
    paths["registered"] = tmp_path / "registered.nii.gz"
    for name, image in (("ct", ct), ("pet", _acquired()), ("registered", _registered(ct))):
        sitk.WriteImage(image, str(paths[name]))
    qc_json = tmp_path / "qc.json"
    qc_json.write_text(json.dumps(_qc(rotation)))
    out = tmp_path / "figure" / "TEST001.png"
    out.parent.mkdir()
    drawn = registration_figure(
        paths["ct"], paths["pet"], paths["registered"], qc_json, out, patient="TEST001"
    )
    assert drawn["checks"]["rotation"] is (rotation <= 4.0)
    assert drawn["positions"]["point_mm"] == pytest.approx(HOT_MM)
    with Image.open(out) as png:
        assert png.size[0] == WIDTH_PX and 600 <= png.size[1] <= 1500
    passed, failed = _colour_pixels(out, FILLS[True]), _colour_pixels(out, FILLS[False])
    if rotation <= 4.0:
        assert passed > 20_000 and failed == 0
    else:  # the title's box and the rotation's box turn red; four boxes stay green
        assert passed > 15_000 and failed > 5_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["TEST001.png"]


def test_a_registered_pet_off_the_ct_grid_is_refused():
    ct = _ct()
    with pytest.raises(ValueError, match="not on the CT grid"):
        fused_planes(ct, _acquired(), _acquired())
