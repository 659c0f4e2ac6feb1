"""Registration recovers the generator's known PET-CT motion to within one PET voxel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct
from abmseg.preprocess.registration_qc import QcLimits
from abmseg.synth.truth import registration_residual_mm


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


def test_recovers_the_synthetic_motion_within_one_pet_voxel(converted, registration):
    score = registration_residual_mm(
        registration["out"] / "pet_to_ct.mat",
        converted["truth"]["motion"],
        converted["paths"].label,
    )
    pet_voxel = min(converted["truth"]["pet_grid"]["spacing_xyz_mm"])
    print(score, "PET voxel", pet_voxel)
    assert score["motion_max_mm"] > 2.0, "the generator must move the PET by more than a few mm"
    assert score["residual_max_mm"] < pet_voxel


def test_qc_shows_better_similarity_after(registration):
    qc = json.loads((registration["out"] / "qc.json").read_text())
    assert qc["mutual_information_after"] > qc["mutual_information_before"]
    assert qc["settings"]["seed"] == 42
    assert qc["qc_passed"] is True and qc["qc_violations"] == []
    assert qc["qc_limits"] == QcLimits().as_dict()


def test_registered_pet_lies_on_the_ct_grid(converted, registration):
    ct = sitk.ReadImage(str(converted["paths"].ct))
    pet = sitk.ReadImage(str(registration["out"] / "pet_suv.nii.gz"))
    assert pet.GetSize() == ct.GetSize()
    np.testing.assert_allclose(pet.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pet.GetSpacing(), ct.GetSpacing(), atol=1e-6)


def test_config_defaults_equal_the_code_defaults():
    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    assert RegistrationSettings.from_config(config) == RegistrationSettings(seed=42, threads=1)


def test_one_thread_registration_is_repeatable_bit_for_bit(converted, tmp_path):
    """The seed must reach antsRegistration (antspyx ignores `random_seed=`): same bytes twice."""
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "abmseg"
    paths = converted["paths"]
    parameters = []
    for run in ("a", "b"):
        subprocess.run(
            [
                str(cli),
                "register",
                "--patient",
                "SYN001",
                "--ct",
                str(paths.ct),
                "--pet",
                str(paths.pet_suv),
                "--out",
                str(tmp_path / run),
                "--threads",
                "1",
                "--set",
                "seed=7",
            ],
            check=True,
            capture_output=True,
        )
        transform = sitk.ReadTransform(str(tmp_path / run / "pet_to_ct.mat"))
        parameters.append(transform.GetParameters())
    assert parameters[0] == parameters[1]
