"""The report's overlay figure (issue 20): plane positions in planning-CT mm and slice indices,
feet-first and flipped scans, the empty-label fallback, the PNG's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from abmseg.evaluate.figures import WIDTH_PX, overlay_figure

SHAPE = (13, 21, 25)  # z, y, x
SPACING_XYZ = (2.0, 1.5, 4.0)  # mm, anisotropic
ORIGIN_XYZ = (-100.0, 50.0, -400.0)  # mm, LPS
BLOB_ZYX = (5, 8, 14)  # index of the ABM blob's centre on the head-first grid
# The planning CT: the same spacing, 10 voxels more on each side (x, y), 10 slices below.
PLANNING_PAD_XYZ = (10, 20, 10)


def _physical(index_zyx: tuple[int, int, int]) -> tuple[float, float, float]:
    z, y, x = index_zyx
    return tuple(o + s * i for o, s, i in zip(ORIGIN_XYZ, SPACING_XYZ, (x, y, z), strict=True))


def _blob(centre_zyx: tuple[int, int, int], value: int = 2) -> np.ndarray:
    """A box of +-2 voxels around ``centre_zyx`` (its centroid is exactly that voxel)."""
    labels = np.zeros(SHAPE, np.uint8)
    z, y, x = centre_zyx
    labels[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3] = value
    return labels


def _anatomy() -> np.ndarray:
    """A CT with a body and a bright bone, not symmetric, so a wrong turn shows in the PNG."""
    zz, yy, xx = np.indices(SHAPE)
    hu = np.where((yy - 10) ** 2 / 90 + (xx - 12) ** 2 / 140 <= 1, 0.0, -1000.0)
    hu[(np.abs(yy - 8) <= 2) & (np.abs(xx - 14) <= 2)] = 700.0
    hu += 10.0 * zz + 3.0 * xx  # gradients along z and x
    return hu.astype(np.int16)


def _image(array: np.ndarray, flip_xyz: tuple[bool, bool, bool]) -> sitk.Image:
    """``array`` (head-first supine, identity direction) stored with the axes in ``flip_xyz``
    reversed, at the same physical place (a feet-first scan flips z)."""
    flipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in flip_xyz[::-1])]
    image = sitk.GetImageFromArray(np.ascontiguousarray(flipped))
    image.SetSpacing(SPACING_XYZ)
    size_xyz = SHAPE[::-1]
    origin = [
        o + (n - 1) * s if f else o
        for o, n, s, f in zip(ORIGIN_XYZ, size_xyz, SPACING_XYZ, flip_xyz, strict=True)
    ]
    image.SetOrigin(origin)
    image.SetDirection(
        [float(-1 if flip_xyz[r] else 1) if r == c else 0.0 for r in range(3) for c in range(3)]
    )
    return image


def _planning_ct(path: Path) -> Path:
    size_xyz = [n + 2 * p for n, p in zip(SHAPE[::-1], PLANNING_PAD_XYZ, strict=True)]
    image = sitk.Image(size_xyz, sitk.sitkInt16)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(
        [o - p * s for o, p, s in zip(ORIGIN_XYZ, PLANNING_PAD_XYZ, SPACING_XYZ, strict=True)]
    )
    sitk.WriteImage(image, str(path))
    return path


def _case(
    tmp: Path,
    truth: np.ndarray,
    predicted: np.ndarray,
    flip_xyz: tuple[bool, bool, bool] = (False, False, False),
) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    hu = _anatomy()
    pet = (truth > 0).astype(np.float32) * 4.0 + 0.5
    arrays = {"ct": hu, "pet": pet, "spet": pet * 0.9, "label": truth, "abm": predicted}
    paths = {}
    for name, array in arrays.items():
        paths[name] = tmp / f"{name}.nii.gz"
        sitk.WriteImage(_image(array, flip_xyz), str(paths[name]))
    return paths


def _draw(paths: dict[str, Path], out: Path, planning: Path | None) -> dict:
    return overlay_figure(
        paths["ct"],
        paths["pet"],
        paths["spet"],
        paths["label"],
        paths["abm"],
        out,
        title="TEST001 (full)",
        planning_ct=planning,
    )


def _expected(positions: dict, centre_zyx: tuple[int, int, int]) -> None:
    x, y, z = _physical(centre_zyx)
    assert positions["point_mm"] == pytest.approx([x, y, z])
    assert positions["axial"]["mm"] == pytest.approx(z)
    assert positions["coronal"]["mm"] == pytest.approx(y)
    assert positions["sagittal"]["mm"] == pytest.approx(x)
    assert [positions[p]["axis"] for p in ("axial", "coronal", "sagittal")] == ["z", "y", "x"]


def test_png_size_and_positions_on_the_planning_ct(tmp_path):
    paths = _case(tmp_path / "case", _blob(BLOB_ZYX), _blob(BLOB_ZYX, 1))
    planning = _planning_ct(tmp_path / "planning_ct.nii.gz")
    out = tmp_path / "figure.png"
    positions = _draw(paths, out, planning)

    with Image.open(out) as png:
        width, height = png.size
    assert width == WIDTH_PX
    assert 500 <= height <= 1500
    assert positions["centre_from"] == "true ABM"
    _expected(positions, BLOB_ZYX)
    z, y, x = BLOB_ZYX
    pad_x, pad_y, pad_z = PLANNING_PAD_XYZ
    assert positions["axial"]["planning_ct_index"] == z + pad_z
    assert positions["coronal"]["planning_ct_index"] == y + pad_y
    assert positions["sagittal"]["planning_ct_index"] == x + pad_x
    # The planning CT's own geometry agrees: its voxel at those indices is the blob's centre.
    image = sitk.ReadImage(str(planning))
    index = (x + pad_x, y + pad_y, z + pad_z)
    assert image.TransformIndexToPhysicalPoint(index) == pytest.approx(_physical(BLOB_ZYX))


@pytest.mark.parametrize(
    "flip_xyz",
    [(False, False, True), (True, True, False), (True, True, True)],
    ids=["feet-first", "x-y-flipped", "all-flipped"],
)
def test_flipped_direction_gives_the_same_position_and_picture(tmp_path, flip_xyz):
    truth, predicted = _blob(BLOB_ZYX), _blob(BLOB_ZYX, 3)
    planning = _planning_ct(tmp_path / "planning_ct.nii.gz")
    reference = _draw(_case(tmp_path / "hf", truth, predicted), tmp_path / "hf.png", planning)
    turned = _draw(
        _case(tmp_path / "ff", truth, predicted, flip_xyz), tmp_path / "ff.png", planning
    )

    _expected(turned, BLOB_ZYX)
    for plane in ("axial", "coronal", "sagittal"):
        assert turned[plane] == pytest.approx(reference[plane])
    # Turned to LPS first: the same anatomy makes the same picture however it was stored.
    with Image.open(tmp_path / "hf.png") as a, Image.open(tmp_path / "ff.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_empty_truth_falls_back_to_the_prediction_then_the_volume_centre(tmp_path):
    other = (8, 12, 9)
    empty = np.zeros(SHAPE, np.uint8)
    from_prediction = _draw(
        _case(tmp_path / "a", empty, _blob(other)), tmp_path / "a.png", planning=None
    )
    assert from_prediction["centre_from"] == "predicted ABM"
    _expected(from_prediction, other)
    assert from_prediction["axial"]["planning_ct_index"] is None

    nothing = _draw(_case(tmp_path / "b", empty, empty), tmp_path / "b.png", planning=None)
    assert nothing["centre_from"] == "volume centre"
    _expected(nothing, tuple((n - 1) // 2 for n in SHAPE))
    assert (tmp_path / "b.png").stat().st_size > 0
