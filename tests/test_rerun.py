"""With a finished run in place, `snakemake -n` plans exactly the jobs a change calls for.

Each test changes one thing (a new patient, one DICOM file, touched files, one config value),
reads the planned job list of a dry run, and puts everything back as it was: the finished run
is shared with other tests.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
import yaml
from conftest import REPO, planned_jobs

from abmseg.cohort.split import assign_split
from abmseg.workflow_run import run_snakemake

PER_PATIENT_CHAIN = {"convert", "register", "crop", "normalise"}
TRAINING = {"train_stage1", "train_stage2"}
# What an inference setting reruns: the bundle carries the sampler settings.
INFERENCE_ONWARD = {
    "infer", "qa", "metrics", "figure", "export_dicom", "bundle", "aggregate", "qa_table",
    "results_page", "all",
}  # fmt: skip


def dry_run_output(pipeline: dict, *configfiles: Path, sheet: Path | None = None) -> str:
    result = run_snakemake(
        pipeline["work"],
        sheet or pipeline["sheet"],
        "-n",
        configfiles=[REPO / "config" / "demo.yaml", pipeline["fast"], *configfiles],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def dry_run(pipeline: dict, *configfiles: Path, sheet: Path | None = None) -> list:
    return planned_jobs(dry_run_output(pipeline, *configfiles, sheet=sheet))


def rules_of(jobs: list) -> set[str]:
    return {rule for rule, _ in jobs}


def split_of(pipeline: dict) -> dict[str, str]:
    rows = (pipeline["work"] / "results" / "split.tsv").read_text().splitlines()[1:]
    return dict(row.split("\t") for row in rows)


def config_value(*keys: str):
    value = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key in keys:
        value = value[key]
    return value


def new_patient_id(subset: str) -> str:
    """A fresh patient ID that the configured hash split puts in ``subset``."""
    split = config_value("split")
    for number in range(1, 500):
        candidate = f"NEW{number:03d}"
        if assign_split([candidate], split["train_fraction"], split["salt"])[candidate] == subset:
            return candidate
    raise AssertionError(f"no candidate ID falls in {subset}")


def plan_with_new_patient(pipeline: dict, subset: str) -> tuple[list, str]:
    """The dry-run jobs once a patient of ``subset`` joins the cohort (removed again after)."""
    sheet, patient = sheet_with_new_patient(pipeline, subset)
    try:
        return dry_run(pipeline, sheet=sheet), patient
    finally:
        shutil.rmtree(sheet.parent / patient)
        sheet.unlink()


def sheet_with_new_patient(pipeline: dict, subset: str) -> tuple[Path, str]:
    """A copy of the cohort sheet plus one patient (a copy of an existing one's raw data under a
    new ID that the split sends to ``subset``), in the raw folder so relative paths still hold."""
    raw = pipeline["sheet"].parent
    patient = new_patient_id(subset)
    source = sorted(p for p in raw.iterdir() if p.is_dir())[0]
    shutil.copytree(source, raw / patient)
    lines = pipeline["sheet"].read_text().splitlines()
    header = lines[0].split("\t")
    row = next(line.split("\t") for line in lines[1:] if line.startswith(source.name + "\t"))
    fields = dict(zip(header, row, strict=True))
    fields["patient_id"] = patient
    for column in ("ct", "pet", "label"):
        fields[column] = fields[column].replace(source.name, patient, 1)
    sheet = raw / f"patients_plus_{patient}.tsv"
    sheet.write_text("\n".join([*lines, "\t".join(fields[c] for c in header)]) + "\n")
    return sheet, patient


@contextmanager
def restored(path: Path) -> Iterator[Path]:
    """Let the body change ``path``; put its exact bytes back afterwards."""
    original = path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(original)


def first_ct_slice(pipeline: dict, patient: str) -> Path:
    folder = pipeline["sheet"].parent / patient / "CT"
    return sorted(p for p in folder.rglob("*") if p.is_file())[0]


def change_one_voxel(dicom_file: Path) -> None:
    dataset = pydicom.dcmread(dicom_file)
    pixels = dataset.pixel_array.copy()
    pixels.flat[pixels.size // 2] += 1
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(dicom_file)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "change.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_a_new_test_patient_plans_its_own_jobs_and_the_aggregates_only(pipeline):
    jobs, patient = plan_with_new_patient(pipeline, "test")
    assert not rules_of(jobs) & TRAINING
    per_patient = [(rule, wc) for rule, wc in jobs if "patient" in wc]
    assert {wc["patient"] for _, wc in per_patient} == {patient}
    assert PER_PATIENT_CHAIN | {"infer", "metrics"} <= rules_of(per_patient)
    cohort_wide = rules_of(jobs) - rules_of(per_patient)
    assert cohort_wide == {"split", "aggregate", "qa_table", "results_page", "all"}


@pytest.mark.slow
def test_a_new_training_patient_retrains(pipeline):
    jobs, patient = plan_with_new_patient(pipeline, "train")
    assert rules_of(jobs) >= TRAINING
    preprocessed = {wc["patient"] for rule, wc in jobs if rule in PER_PATIENT_CHAIN}
    assert preprocessed == {patient}
    assert not any(rule == "infer" and wc["patient"] == patient for rule, wc in jobs)


@pytest.mark.slow
def test_changed_dicom_of_a_test_patient_reruns_that_patient_only(pipeline):
    patient = next(p for p, subset in split_of(pipeline).items() if subset == "test")
    with restored(first_ct_slice(pipeline, patient)) as dicom_file:
        change_one_voxel(dicom_file)
        jobs = dry_run(pipeline)
    assert not rules_of(jobs) & TRAINING
    assert {wc["patient"] for _, wc in jobs if "patient" in wc} == {patient}
    assert PER_PATIENT_CHAIN | {"infer", "metrics", "aggregate"} <= rules_of(jobs)
    assert "split" not in rules_of(jobs)


@pytest.mark.slow
def test_changed_dicom_of_a_training_patient_retrains(pipeline):
    split = split_of(pipeline)
    patient = next(p for p, subset in split.items() if subset == "train")
    with restored(first_ct_slice(pipeline, patient)) as dicom_file:
        change_one_voxel(dicom_file)
        jobs = dry_run(pipeline)
    assert rules_of(jobs) >= TRAINING
    assert {wc["patient"] for rule, wc in jobs if rule in PER_PATIENT_CHAIN} == {patient}
    test_patients = {p for p, subset in split.items() if subset == "test"}
    assert {wc["patient"] for rule, wc in jobs if rule == "infer"} == test_patients


@pytest.mark.slow
def test_touching_files_without_changing_them_plans_nothing(pipeline):
    """Raw files newest, intermediates newer than the results made from them: every job sees a
    newer input, and Snakemake's recorded checksums show that nothing changed."""
    now = time.time()
    results = pipeline["work"] / "results"
    stamps = [(results, now), (results / "cropped", now + 5), (results / "normalized", now + 5)]
    stamps.append((pipeline["sheet"].parent, now + 10))
    for folder, stamp in stamps:
        for path in folder.rglob("*"):
            if path.is_file():
                os.utime(path, (stamp, stamp))
    output = dry_run_output(pipeline)
    assert "Nothing to be done" in output and planned_jobs(output) == []


@pytest.mark.slow
def test_the_ct_window_reruns_normalisation_onward(pipeline, tmp_path):
    width = config_value("normalise", "ct_width_hu")
    jobs = dry_run(pipeline, write_config(tmp_path, f"normalise: {{ct_width_hu: {width + 100}}}"))
    assert rules_of(jobs) == {"normalise", *TRAINING, *INFERENCE_ONWARD}
    assert {wc["patient"] for rule, wc in jobs if rule == "normalise"} == set(split_of(pipeline))


@pytest.mark.slow
def test_a_metric_option_reruns_only_the_metrics(pipeline, tmp_path):
    sigma = config_value("metrics", "ssim_sigma")
    jobs = dry_run(pipeline, write_config(tmp_path, f"metrics: {{ssim_sigma: {sigma + 0.5}}}"))
    assert rules_of(jobs) == {"metrics", "aggregate", "results_page", "all"}


@pytest.mark.slow
def test_an_inference_option_reruns_inference_onward(pipeline, tmp_path):
    jobs = dry_run(pipeline, write_config(tmp_path, "inference: {steps: 3}"))
    assert rules_of(jobs) == INFERENCE_ONWARD


@pytest.mark.slow
def test_a_qa_limit_reruns_the_qa_not_the_networks(pipeline, tmp_path):
    """The QA of a test patient is its own rule: a new limit re-judges the written maps. The
    bundle records the limits (CT-only patients are judged with them), so it is rewritten."""
    jobs = dry_run(pipeline, write_config(tmp_path, "qa: {max_marrow_entropy: 0.5}"))
    assert rules_of(jobs) == {"qa", "qa_table", "export_dicom", "bundle", "results_page", "all"}


@pytest.mark.slow
def test_the_worker_count_reruns_nothing(pipeline, tmp_path):
    output = dry_run_output(pipeline, write_config(tmp_path, "training: {workers: 3}"))
    assert "Nothing to be done" in output and planned_jobs(output) == []
