"""The Snakemake DAG end to end on a tiny synthetic cohort, run as a user would run it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from abmseg.io.dicom_series import list_dicom_files
from abmseg.privacy.identifiers import identifiers_in
from abmseg.privacy.scan import scan
from abmseg.synth import generate_cohort
from abmseg.workflow_run import run_snakemake

REPO = Path(__file__).resolve().parents[1]
PER_PATIENT = [
    "converted/{p}/ct.nii.gz",
    "converted/{p}/pet_suv.nii.gz",
    "converted/{p}/label.nii.gz",
    "converted/{p}/meta.json",
    "registered/{p}/pet_suv.nii.gz",
    "registered/{p}/pet_to_ct.mat",
    "registered/{p}/qc.json",
    "cropped/{p}/ct.nii.gz",
    "cropped/{p}/pet_suv.nii.gz",
    "cropped/{p}/label.nii.gz",
    "cropped/{p}/roi.json",
    "normalized/{p}/ct.nii.gz",
    "normalized/{p}/pet.nii.gz",
    "normalized/{p}/label.nii.gz",
]


def snakemake(workdir: Path, sheet: Path, *args: str, config: tuple[str, ...] = ()):
    return run_snakemake(workdir, sheet, *args, config=config)


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    """Three patients; SYN003's PET lost its weight tag. Run with --keep-going."""
    root = tmp_path_factory.mktemp("wf")
    sheet = generate_cohort(root / "raw", n_patients=3, seed=7, preset="tiny")
    for path in list_dicom_files(root / "raw" / "SYN003" / "PET"):
        ds = pydicom.dcmread(path)
        del ds.PatientWeight
        ds.save_as(path)
    work = root / "work"
    work.mkdir()
    targets = [f"results/normalized/SYN00{k}/ct.nii.gz" for k in (1, 2, 3)] + ["results/split.tsv"]
    result = snakemake(work, sheet, "--cores", "2", "--keep-going", *targets)
    return {"root": root, "sheet": sheet, "work": work, "result": result}


@pytest.mark.slow
def test_good_patients_finish_and_the_bad_one_fails_clearly(cohort_run):
    work, result = cohort_run["work"], cohort_run["result"]
    assert result.returncode != 0, "a failed patient must make the run fail"
    for patient in ("SYN001", "SYN002"):
        for pattern in PER_PATIENT:
            assert (work / "results" / pattern.format(p=patient)).is_file(), pattern
    assert not (work / "results" / "converted" / "SYN003").exists() or not any(
        (work / "results" / "converted" / "SYN003").glob("*.nii.gz")
    )
    log = (work / "logs" / "convert" / "SYN003.log").read_text()
    assert "patient SYN003" in log and "patient weight" in log and "Fix:" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_split_file_lists_every_patient(cohort_run):
    split = pd.read_csv(cohort_run["work"] / "results" / "split.tsv", sep="\t")
    assert list(split.patient_id) == ["SYN001", "SYN002", "SYN003"]
    assert set(split.subset) <= {"train", "validation", "test"}


@pytest.mark.slow
def test_finished_patients_are_not_planned_again(cohort_run):
    targets = [f"results/normalized/SYN00{k}/ct.nii.gz" for k in (1, 2)]
    dry = snakemake(cohort_run["work"], cohort_run["sheet"], "-n", *targets)
    assert dry.returncode == 0, dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_no_phi_in_results_or_logs_of_a_run_with_a_failed_patient(cohort_run):
    identifiers = identifiers_in([cohort_run["root"] / "raw"])
    work = cohort_run["work"]
    findings, files = scan([work / "results", work / "logs", work / "benchmarks"], identifiers)
    assert files > 20
    assert not findings, "\n".join(f.line() for f in findings)


def test_unsafe_patient_id_is_refused_before_any_job(tmp_path):
    folder = tmp_path / "x"
    (folder / "CT").mkdir(parents=True)
    (folder / "PET").mkdir()
    (folder / "label.nii.gz").touch()
    sheet = tmp_path / "patients.tsv"
    sheet.write_text("patient_id\tct\tpet\tlabel\n../evil\tx/CT\tx/PET\tx/label.nii.gz\n")
    result = snakemake(tmp_path, sheet, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "'../evil'" in output and "letters, digits" in output


def test_unknown_config_key_is_refused(tmp_path, tiny_cohort):
    result = snakemake(tmp_path, tiny_cohort / "patients.tsv", "-n", config=("normalise_typo=3",))
    assert result.returncode != 0
    assert "normalise_typo" in result.stdout + result.stderr


def test_wrong_config_type_is_refused(tmp_path, tiny_cohort):
    result = snakemake(tmp_path, tiny_cohort / "patients.tsv", "-n", config=("seed=abc",))
    assert result.returncode != 0
    assert "'abc' is not of type 'integer'" in result.stdout + result.stderr
