"""The whole method as a DAG on a tiny synthetic cohort: DICOM in, summary tables and report out."""

from __future__ import annotations

import json
import math

import pytest
import SimpleITK as sitk
from conftest import pipeline_snakemake as snakemake


@pytest.mark.slow
def test_summary_tables_are_written(pipeline):
    text = (pipeline["work"] / "results" / "metrics" / "summary.md").read_text()
    assert "Table 1" in text and "Table 2: Dice" in text and "| full |" in text
    assert "| paper (this method) |" in text


@pytest.mark.slow
def test_every_test_patient_has_outputs_on_its_ct_grid(pipeline):
    work = pipeline["work"]
    split = (work / "results" / "split.tsv").read_text().splitlines()[1:]
    test_patients = [line.split("\t")[0] for line in split if line.endswith("test")]
    assert test_patients
    for patient in test_patients:
        ct = sitk.ReadImage(str(work / "results" / "converted" / patient / "ct.nii.gz"))
        abm_ct = sitk.ReadImage(
            str(work / "results" / "inference" / "full" / patient / "abm_ct.nii.gz")
        )
        assert abm_ct.GetSize() == ct.GetSize() and abm_ct.GetOrigin() == ct.GetOrigin()
        scores = json.loads((work / "results" / "metrics" / "full" / f"{patient}.json").read_text())
        assert math.isfinite(scores["synthesis"]["psnr_db"])
        assert 0 <= scores["segmentation"]["mean"]["dice"] <= 1
        assert (work / "results" / "figures" / "full" / f"{patient}.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_second_run_does_nothing(pipeline):
    dry = snakemake(pipeline["work"], pipeline["sheet"], pipeline["fast"], "-n")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_report_renders(pipeline):
    report = pipeline["work"] / "report.html"
    result = snakemake(
        pipeline["work"], pipeline["sheet"], pipeline["fast"], "--report", str(report)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report.stat().st_size > 10_000
