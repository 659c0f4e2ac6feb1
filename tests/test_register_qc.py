"""A registration that diverges or goes beyond register.qc fails the patient with its figures."""

from __future__ import annotations

import json
import math
import runpy
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from abmseg.errors import PatientDataError
from abmseg.preprocess.register import (
    AFFINE_DEFAULT,
    RegistrationSettings,
    StageSettings,
    register_pet_to_ct,
)
from abmseg.preprocess.registration_qc import (
    QcLimits,
    RegistrationQcError,
    check_registration,
)

REPO = Path(__file__).resolve().parents[1]
LIMITS = QcLimits(
    min_mutual_information_gain=0.25,
    max_centre_displacement_mm=30.0,
    max_rotation_deg=10.0,
    min_scale=0.5,
    max_scale=1.5,
)


def qc(before=0.5, after=1.0, displacement=5.0, rotation=3.0, scale_min=1.0, scale_max=1.0):
    """A hand-made QC record (binary-exact numbers, so boundaries are exact)."""
    return {
        "mutual_information_before": before,
        "mutual_information_after": after,
        "transform": {
            "centre_displacement_mm": displacement,
            "rotation_deg": rotation,
            "scale_min": scale_min,
            "scale_max": scale_max,
        },
    }


def test_a_registration_within_the_limits_passes():
    assert check_registration(qc(), LIMITS) == []


@pytest.mark.parametrize(
    ("figures", "fails", "words"),
    [
        ({"after": 0.75}, False, ""),  # gain 0.25 = limit
        ({"after": 1.0}, False, ""),
        ({"after": 0.625}, True, "gain +0.1250, limit >= +0.2500"),
        ({"displacement": 30.0}, False, ""),
        ({"displacement": 29.5}, False, ""),
        ({"displacement": 30.5}, True, "centre displacement 30.50 mm > limit 30 mm"),
        ({"rotation": 10.0}, False, ""),
        ({"rotation": 9.5}, False, ""),
        ({"rotation": 10.5}, True, "rotation 10.50 deg > limit 10 deg"),
        ({"scale_min": 0.5}, False, ""),
        ({"scale_min": 0.75}, False, ""),
        ({"scale_min": 0.25}, True, "scale 0.2500 < limit 0.5"),
        ({"scale_max": 1.5}, False, ""),
        ({"scale_max": 1.25}, False, ""),
        ({"scale_max": 1.75}, True, "scale 1.7500 > limit 1.5"),
    ],
)
def test_each_limit_at_below_and_above_its_boundary(figures, fails, words):
    violations = check_registration(qc(**figures), LIMITS)
    if fails:
        assert len(violations) == 1 and words in violations[0], violations
    else:
        assert violations == []


def test_similarity_worse_after_registration_fails_under_the_default_limits():
    violations = check_registration(qc(before=0.61, after=0.55), QcLimits())
    assert len(violations) == 1
    assert "from 0.6100 to 0.5500" in violations[0] and "gain -0.0600" in violations[0]
    assert check_registration(qc(before=0.61, after=0.61), QcLimits()) == []


def test_every_broken_limit_is_listed():
    violations = check_registration(
        qc(after=0.5, displacement=80.0, rotation=45.0, scale_min=0.25, scale_max=2.0), LIMITS
    )
    assert len(violations) == 5


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_a_missing_or_non_finite_figure_fails(value):
    record = qc()
    record["transform"]["rotation_deg"] = value
    violations = check_registration(record, LIMITS)
    assert violations == [f"rotation_deg is {value!r}, not a finite number"]


def test_the_error_names_patient_file_figures_and_fix():
    record = qc(before=0.61, after=0.55, displacement=84.5, scale_min=0.99, scale_max=1.01)
    error = RegistrationQcError("SYN001", "results/converted/SYN001/pet_suv.nii.gz", record, ["x"])
    text = str(error)
    assert isinstance(error, PatientDataError) and error.qc is record
    assert text.startswith("patient SYN001 (results/converted/SYN001/pet_suv.nii.gz): ")
    for figure in ("MI before 0.61 after 0.55", "84.5 mm", "3.0 deg", "0.99..1.01"):
        assert figure in text
    assert "same PET/CT session" in text and "relax register.qc" in text


def test_config_limits_are_the_code_defaults_and_pass_the_schema_bounds():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert RegistrationSettings.from_config(config).qc == QcLimits()


# --- real ANTs registrations of the tiny synthetic SYN001 ------------------------------------


def short_schedule(**changes) -> RegistrationSettings:
    """The default registration with fewer iterations on a 6 mm grid (~3 s instead of ~15 s)."""
    return replace(
        RegistrationSettings(seed=42, threads=2),
        working_spacing_mm=6.0,
        rigid=replace(StageSettings(), iterations=(60, 30, 10)),
        affine=replace(AFFINE_DEFAULT, iterations=(10, 5)),
        **changes,
    )


def test_pet_shifted_80_mm_fails_qc_and_writes_nothing(converted, tmp_path):
    """A PET 80 mm off laterally (not the same frame as its CT): ANTs finds the shift, far
    beyond the default 30 mm limit, so the patient fails instead of going on."""
    pet = sitk.ReadImage(str(converted["paths"].pet_suv))
    origin = list(pet.GetOrigin())
    origin[0] += 80.0
    pet.SetOrigin(origin)
    shifted = tmp_path / "pet_suv.nii.gz"
    sitk.WriteImage(pet, str(shifted))
    out = tmp_path / "registered"
    with pytest.raises(RegistrationQcError) as failure:
        register_pet_to_ct(
            converted["paths"].ct,
            shifted,
            out / "pet_suv.nii.gz",
            out / "pet_to_ct.mat",
            out / "qc.json",
            short_schedule(),
            patient="SYN001",
        )
    message = str(failure.value)
    print(message)
    record = failure.value.qc
    assert record["qc_passed"] is False
    assert record["transform"]["centre_displacement_mm"] > 60.0
    assert f"patient SYN001 ({shifted})" in message
    assert "centre displacement" in message and "> limit 30 mm" in message
    assert f"MI before {record['mutual_information_before']}" in message
    assert not out.exists() or not any(out.iterdir())


def test_nearest_neighbour_pet_keeps_the_pet_s_own_suv_values(converted, tmp_path):
    """register.pet_interpolation: nearestNeighbor writes only SUV values the PET holds (no
    smoothing of hot spots), linear writes in-between values; both come from the same transform."""
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(converted["paths"].pet_suv)))
    written = {}
    for method in ("nearestNeighbor", "linear"):
        out = tmp_path / method
        register_pet_to_ct(
            converted["paths"].ct,
            converted["paths"].pet_suv,
            out / "pet_suv.nii.gz",
            out / "pet_to_ct.mat",
            out / "qc.json",
            short_schedule(pet_interpolation=method),
            patient="SYN001",
        )
        written[method] = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "pet_suv.nii.gz")))
        assert json.loads((out / "qc.json").read_text())["settings"]["pet_interpolation"] == method
    assert np.isin(written["nearestNeighbor"], np.append(source.ravel(), 0.0)).all()
    assert not np.isin(written["linear"], source).all()
    assert written["nearestNeighbor"].max() <= source.max() + 1e-6


class Wildcards(dict):
    """Snakemake's wildcards answer both .patient and .get('patient')."""

    def __getattr__(self, name: str) -> str:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def test_rule_script_keeps_the_figures_in_the_log_folder(converted, tmp_path, monkeypatch):
    """scripts/register.py with limits no real motion meets (and short stages, for speed): exit
    status 1, one line with the figures, the QC record in logs/, and no output at all."""
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = config["register"]
    for stage in ("rigid", "affine"):
        settings[stage]["iterations"] = [10] * len(settings[stage]["iterations"])
    settings["qc"]["max_centre_displacement_mm"] = 0.01
    output = {
        "pet": "results/registered/SYN001/pet_suv.nii.gz",
        "transform": "results/registered/SYN001/pet_to_ct.mat",
        "qc": "results/registered/SYN001/qc.json",
    }
    job = SimpleNamespace(
        rule="register",
        wildcards=Wildcards(patient="SYN001"),
        input=SimpleNamespace(ct=str(converted["paths"].ct), pet=str(converted["paths"].pet_suv)),
        output=SimpleNamespace(**output),
        log=["logs/register/SYN001.log"],
        params=SimpleNamespace(config={"seed": 42, "register": settings}),
        threads=2,
        config=config,
    )
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(str(REPO / "scripts" / "register.py"), init_globals={"snakemake": job})
    assert exit_status.value.code == 1
    log = (tmp_path / "logs" / "register" / "SYN001.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert "failed QC: centre displacement" in errors[0] and "> limit 0.01 mm" in errors[0]
    assert "All QC figures: logs/register/SYN001.qc_failed.json" in errors[0]
    record = json.loads((tmp_path / "logs" / "register" / "SYN001.qc_failed.json").read_text())
    assert record["qc_passed"] is False and record["patient_id"] == "SYN001"
    assert record["qc_limits"]["max_centre_displacement_mm"] == 0.01
    assert record["transform"]["centre_displacement_mm"] > 0.01
    assert not (tmp_path / "results" / "registered").exists()
    assert not list((tmp_path / "results").rglob("*.json"))  # no provenance record either
