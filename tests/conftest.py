"""Shared fixtures: one tiny synthetic cohort per test session, converted once."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from deploy import deploy, release_tree

from abmseg.preprocess.convert import ConvertedPaths, convert_patient
from abmseg.synth import generate_cohort
from abmseg.workflow_run import run_snakemake

REPO = Path(__file__).resolve().parents[1]


def _skip_the_slurm_plugins_config_probe() -> None:
    """Every Snakemake start imports the SLURM executor plugin, which runs `scontrol show config`
    for a help text. Where the test cluster's client is installed but no controller runs (CI, all
    tests but test_slurm), that call waits ~9 s: a shim answers it at once, and passes every
    other scontrol command to the real one."""
    real = shutil.which("scontrol")
    if real is None:
        return
    folder = Path(tempfile.mkdtemp(prefix="abmseg-test-bin-"))
    shim = folder / "scontrol"
    shim.write_text(
        f'#!/bin/sh\nif [ "$1 $2" = "show config" ]; then exit 1; fi\nexec {real} "$@"\n'
    )
    shim.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"


_skip_the_slurm_plugins_config_probe()


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
    meta = convert_patient("SYN001", raw / "CT", raw / "PET", raw / "label.nii.gz", paths)
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


FAST = """
training:
  image_size: 32
  batch_size: 4
  epochs_stage1: 1
  epochs_stage2: 1
  max_slices_per_epoch: 16
inference:
  steps: 2
"""


def pipeline_snakemake(work: Path, sheet: Path, fast: Path, *args: str):
    """Snakemake on a finished run's folders (demo config + the fast overrides), through the
    work folder's own deployed Snakefile where it has one."""
    return run_snakemake(work, sheet, *args, configfiles=[REPO / "config" / "demo.yaml", fast])


def run_folders(tmp_path_factory, name: str) -> dict:
    """A 6-patient tiny cohort (raw/), the FAST overrides and an empty work folder for a run."""
    root = tmp_path_factory.mktemp(name)
    sheet = generate_cohort(root / "raw", n_patients=6, seed=7, preset="tiny")
    fast = root / "fast.yaml"
    fast.write_text(FAST)
    work = root / "work"
    work.mkdir()
    return {"root": root, "sheet": sheet, "fast": fast, "work": work}


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """One finished tiny run of the whole DAG, shared by the tests that read or dry-run it (tests
    that change a file put it back as it was). It runs the way a Snakemake user runs it: the
    workflow deployed with snakedeploy into the work folder, as a module (tests/deploy.py)."""
    run = run_folders(tmp_path_factory, "pipeline")
    release = release_tree(run["root"] / "release")
    run["snakefile"] = deploy(release, run["work"])
    result = pipeline_snakemake(run["work"], run["sheet"], run["fast"], "--cores", "2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return run


JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists, from its job blocks."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in output.splitlines():
        header = JOB_HEADER.match(line.strip())
        if header:
            jobs.append((header.group(1), {}))
        elif jobs and line.strip().startswith("wildcards:"):
            pairs = line.split(":", 1)[1].split(",")
            jobs[-1][1].update(pair.strip().split("=", 1) for pair in pairs)
    return jobs
