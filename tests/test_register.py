"""Registration recovers the generator's known PET-CT motion to within one PET voxel."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct


def true_pet_to_ct(motion: dict) -> sitk.Euler3DTransform:
    transform = sitk.Euler3DTransform()
    transform.SetComputeZYX(False)
    transform.SetCenter(motion["center"])
    transform.SetRotation(*motion["angles_rad"])
    transform.SetTranslation(motion["translation_mm"])
    return transform


@pytest.fixture(scope="module")
def registration(converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("registered")
    qc = register_pet_to_ct(
        converted["paths"].ct,
        converted["paths"].pet_suv,
        out / "pet_suv.nii.gz",
        out / "pet_to_ct.mat",
        out / "qc.json",
        RegistrationSettings(seed=42, threads=2),
        patient="SYN001",
    )
    return {"qc": qc, "out": out}


def roi_points(label_path) -> list[tuple[float, float, float]]:
    """A 3x3x3 lattice of world points spanning the pelvic marrow's bounding box."""
    label = sitk.ReadImage(str(label_path))
    nz = np.argwhere(sitk.GetArrayViewFromImage(label) > 0)
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    points = []
    for fz, fy, fx in itertools.product((0.0, 0.5, 1.0), repeat=3):
        z, y, x = lo + (hi - lo) * np.array([fz, fy, fx])
        points.append(label.TransformContinuousIndexToPhysicalPoint((x, y, z)))
    return points


def test_recovers_the_synthetic_motion_within_one_pet_voxel(converted, registration):
    estimated = sitk.ReadTransform(str(registration["out"] / "pet_to_ct.mat"))
    truth = true_pet_to_ct(converted["truth"]["motion"])
    pet_voxel = min(converted["truth"]["pet_grid"]["spacing_xyz_mm"])
    errors = []
    for point in roi_points(converted["paths"].label):
        # estimated: CT point -> PET point; truth: PET point -> CT point; round trip = identity.
        round_trip = truth.TransformPoint(estimated.TransformPoint(point))
        errors.append(np.linalg.norm(np.subtract(round_trip, point)))
    motion = [
        np.linalg.norm(np.subtract(truth.GetInverse().TransformPoint(p), p))
        for p in roi_points(converted["paths"].label)
    ]
    print(f"motion {max(motion):.2f} mm; residual max {max(errors):.2f} mm; PET voxel {pet_voxel}")
    assert max(motion) > 2.0, "the generator must move the PET by more than a couple of mm"
    assert max(errors) < pet_voxel


def test_qc_shows_better_similarity_after(registration):
    qc = json.loads((registration["out"] / "qc.json").read_text())
    assert qc["mutual_information_after"] > qc["mutual_information_before"]
    assert qc["settings"]["seed"] == 42


def test_registered_pet_lies_on_the_ct_grid(converted, registration):
    ct = sitk.ReadImage(str(converted["paths"].ct))
    pet = sitk.ReadImage(str(registration["out"] / "pet_suv.nii.gz"))
    assert pet.GetSize() == ct.GetSize()
    np.testing.assert_allclose(pet.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pet.GetSpacing(), ct.GetSpacing(), atol=1e-6)


def test_config_defaults_equal_the_code_defaults():
    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    from_config = RegistrationSettings.from_config(config["register"], seed=42, threads=1)
    assert from_config == RegistrationSettings(seed=42, threads=1)
