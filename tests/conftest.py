"""Shared fixtures: one tiny synthetic cohort per test session, converted once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from abmseg.io.convert import ConvertedPaths, convert_patient
from abmseg.synth import generate_cohort

REPO = Path(__file__).resolve().parents[1]
REGION_LABELS = [0, 1, 2, 3]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Three tiny synthetic patients (read-only: copy a patient before mutating it)."""
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, n_patients=3, seed=11, preset="tiny")
    return root


@pytest.fixture(scope="session")
def converted(tmp_path_factory, tiny_cohort) -> dict:
    """SYN001 converted by abmseg, with its generator truth."""
    out = tmp_path_factory.mktemp("converted")
    raw = tiny_cohort / "SYN001"
    paths = ConvertedPaths(
        out / "ct.nii.gz", out / "pet_suv.nii.gz", out / "label.nii.gz", out / "meta.json"
    )
    meta = convert_patient(
        "SYN001", raw / "CT", raw / "PET", raw / "label.nii.gz", paths, REGION_LABELS
    )
    return {
        "paths": paths,
        "meta": meta,
        "raw": raw,
        "truth": json.loads((raw / "truth.json").read_text()),
    }


@pytest.fixture
def patient_copy(tmp_path, tiny_cohort) -> Path:
    """A writable copy of SYN001's raw folder, for tests that damage the input."""
    target = tmp_path / "SYN001"
    shutil.copytree(tiny_cohort / "SYN001", target)
    return target
