"""The validation study's DAG on the shared finished tiny run: a dry run lists every study job,
and a real run of the study (baselines fitted on the training patients, the ceiling, the PET
reference, a small sampler sweep, the leakage checks) writes the study's tables."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import REPO, planned_jobs

from abmseg.study.tables import (
    ABLATION_COLUMNS,
    PAIRED_COLUMNS,
    PER_PATIENT_COLUMNS,
    SAMPLER_COLUMNS,
)
from abmseg.workflow_run import run_snakemake

STUDY = """
study:
  enabled: true
  sampler_steps: [1, 2]
  start_candidates: [100, 20]
  start_selection_patients: 1
  bootstrap_resamples: 200
"""
REFERENCES = ["all_marrow", "hu_threshold", "logistic", "ceiling", "pet_threshold"]


@pytest.fixture(scope="module")
def study_run(pipeline, tmp_path_factory):
    """A copy of the finished tiny run (the shared fixture stays as it was) with the study on."""
    root = tmp_path_factory.mktemp("study")
    work = root / "work"
    shutil.copytree(pipeline["work"], work, symlinks=True)
    study = root / "study.yaml"
    study.write_text(STUDY)
    configs = [REPO / "config" / "demo.yaml", pipeline["fast"], study]

    def snakemake(*args: str):
        return run_snakemake(work, pipeline["sheet"], *args, configfiles=configs)

    dry = snakemake("-n")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    real = snakemake("--cores", "2", "results/study/summary.md")
    assert real.returncode == 0, real.stdout[-4000:] + real.stderr[-4000:]
    split = list(csv.DictReader((work / "results" / "split.tsv").open(), delimiter="\t"))
    return {
        "work": work,
        "dry": dry.stdout,
        # the training side: fitted on, or held out for validation (both feed training)
        "train": [r["patient_id"] for r in split if r["subset"] in ("train", "validation")],
        "test": [r["patient_id"] for r in split if r["subset"] == "test"],
    }


def _rows(path):
    with path.open() as handle:
        header = handle.readline().rstrip("\n").split("\t")
        handle.seek(0)
        return header, list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.slow
def test_the_dry_run_plans_every_study_job_and_no_retraining(study_run):
    rules = [rule for rule, _ in planned_jobs(study_run["dry"])]
    for rule in ("fit_baselines", "apply_baseline", "ceiling", "metrics_reference"):
        assert rule in rules
    for rule in ("select_start", "sampler_point", "leakage", "study_summary"):
        assert rule in rules
    assert "train_stage1" not in rules and "train_stage2" not in rules  # config reuses the models
    points = {w["point"] for rule, w in planned_jobs(study_run["dry"]) if rule == "sampler_point"}
    assert points == {
        "ddim-1-T", "ddim-2-T", "ddim-1-best", "ddim-2-best",
        "ddim-10-100", "ddim-10-20", "ddim-1-250", "pseudo",
    }  # fmt: skip


@pytest.mark.slow
def test_the_baselines_are_fitted_on_training_patients_only(study_run):
    fitted = json.loads((study_run["work"] / "results/study/baselines.json").read_text())
    assert sorted(fitted["fitted_on"]) == sorted(study_run["train"])
    assert not set(fitted["fitted_on"]) & set(study_run["test"])


@pytest.mark.slow
def test_the_study_tables_have_their_contract_columns_and_every_method(study_run):
    folder = study_run["work"] / "results" / "study"
    expected = {
        "ablation.tsv": ABLATION_COLUMNS,
        "per_patient.tsv": PER_PATIENT_COLUMNS,
        "paired.tsv": PAIRED_COLUMNS,
        "sampler.tsv": SAMPLER_COLUMNS,
    }
    for name, columns in expected.items():
        header, _ = _rows(folder / name)
        assert header == columns, name
    _, ablation = _rows(folder / "ablation.tsv")
    methods = [row["method"] for row in ablation]
    assert methods == ["full", *REFERENCES]
    by_method = {row["method"]: row for row in ablation}
    assert by_method["full"]["psnr"] != "" and by_method["all_marrow"]["psnr"] == ""
    assert float(by_method["pet_threshold"]["dice_mean"]) > float(
        by_method["all_marrow"]["dice_mean"]
    )  # the PET shows where ABM is: a threshold on it must beat a guess from the bone alone
    _, per_patient = _rows(folder / "per_patient.tsv")
    assert len(per_patient) == len(methods) * len(study_run["test"])
    _, sampler = _rows(folder / "sampler.tsv")
    assert len(sampler) == 8 and {"ddim", "pseudo"} == {row["sampler"] for row in sampler}
    text = (folder / "summary.md").read_text()
    assert "| full |" in text and "Leakage checks" in text
    assert (folder / "dice_per_region.png").stat().st_size > 5000


@pytest.mark.slow
def test_the_leakage_check_finds_no_test_patient_behind_the_models(study_run):
    report = json.loads((study_run["work"] / "results/study/leakage.json").read_text())
    assert report["leaks"] == []
    assert report["models"]  # both stages of full were traced
    for summary in report["models"].values():
        assert sorted(summary["patients"]) == sorted(study_run["train"])
    assert len(report["shuffled"]["patients"]) == len(study_run["test"])
