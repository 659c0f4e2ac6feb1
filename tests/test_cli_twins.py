"""The `abmseg` twin of each rule gives the rule's own result on the shared finished run, from
the same config file: infer, evaluate, bundle and export-dicom call the rule's code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from conftest import REPO

from abmseg.cli import main

pytestmark = pytest.mark.slow
VARIANT = "full"


def merged(*files: Path) -> dict:
    """Config files merged as Snakemake merges --configfile (nested sections key by key)."""

    def update(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = value
        return base

    config: dict = {}
    for path in files:
        update(config, yaml.safe_load(Path(path).read_text()))
    return config


@pytest.fixture(scope="module")
def run(pipeline, tmp_path_factory):
    """The finished run, its config as one file, and its first test patient."""
    work = pipeline["work"]
    config = tmp_path_factory.mktemp("twins") / "run.yaml"
    config.write_text(yaml.safe_dump(merged(REPO / "config" / "demo.yaml", pipeline["fast"])))
    split = (work / "results" / "split.tsv").read_text().splitlines()[1:]
    patient = next(line.split("\t")[0] for line in split if line.endswith("\ttest"))
    return {"work": work, "config": str(config), "patient": patient, "raw": pipeline["root"]}


def qa_verdict(work: Path, patient: str) -> str:
    return json.loads((work / f"results/inference/{VARIANT}/{patient}/qa.json").read_text())[
        "verdict"
    ]


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_abmseg_infer_gives_the_rule_s_prediction(run, tmp_path):
    work, patient = run["work"], run["patient"]
    rule_out = work / "results" / "inference" / VARIANT / patient
    args = [
        "infer", "--config", run["config"], "--patient", patient,
        "--model", str(work / f"results/models/{VARIANT}/stage2/model.pt"),
        "--ct", str(work / f"results/normalized/{patient}/ct.nii.gz"),
        "--converted-ct", str(work / f"results/converted/{patient}/ct.nii.gz"),
        "--roi", str(work / f"results/cropped/{patient}/roi.json"),
        "--out", str(tmp_path), "--threads", "2",
    ]  # fmt: skip
    assert main(args) == 0
    for name in ("abm.nii.gz", "abm_ct.nii.gz"):
        np.testing.assert_array_equal(array(tmp_path / name), array(rule_out / name))
    for name in ("abm_prob.nii.gz", "abm_uncertainty.nii.gz"):
        np.testing.assert_allclose(array(tmp_path / name), array(rule_out / name), atol=1e-5)
    np.testing.assert_allclose(
        array(tmp_path / "spet.nii.gz"), array(rule_out / "spet.nii.gz"), atol=1e-4
    )


def test_abmseg_qa_gives_the_rule_s_statistics_and_verdict(run, tmp_path):
    work, patient = run["work"], run["patient"]
    rule_out = work / "results" / "inference" / VARIANT / patient
    args = [
        "qa", "--config", run["config"], "--patient", patient, "--maps", str(rule_out),
        "--converted-ct", str(work / f"results/converted/{patient}/ct.nii.gz"),
        "--roi", str(work / f"results/cropped/{patient}/roi.json"),
        "--profile", str(work / "results/qa/training_profile.json"), "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    for name in ("abm_stats.json", "qa.json", "abm_stats.tsv"):
        assert (tmp_path / name).read_text() == (rule_out / name).read_text(), name
    assert sitk.ReadImage(str(tmp_path / "qa.png")).GetSize() == (1500, 800)


def test_abmseg_evaluate_gives_the_rule_s_scores(run, tmp_path):
    work, patient = run["work"], run["patient"]
    cropped = work / "results" / "cropped" / patient
    inferred = work / "results" / "inference" / VARIANT / patient
    out = tmp_path / "scores.json"
    args = [
        "evaluate", "--config", run["config"], "--patient", patient, "--variant", VARIANT,
        "--spet", str(inferred / "spet.nii.gz"), "--abm", str(inferred / "abm.nii.gz"),
        "--pet", str(cropped / "pet_suv.nii.gz"), "--label", str(cropped / "label.nii.gz"),
        "--ct", str(cropped / "ct.nii.gz"), "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    rule_scores = work / "results" / "metrics" / VARIANT / f"{patient}.json"
    assert json.loads(out.read_text()) == json.loads(rule_scores.read_text())


def test_abmseg_aggregate_writes_the_rule_s_tables_and_summary_json(run, tmp_path):
    work = run["work"]
    metrics = sorted((work / "results" / "metrics" / VARIANT).glob("*.json"))
    assert main(["aggregate", *map(str, metrics), "--out", str(tmp_path)]) == 0
    for name in ("per_patient.tsv", "summary.tsv", "summary.md", "summary.json"):
        assert (tmp_path / name).read_text() == (work / "results" / "metrics" / name).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {row["patient_id"] for row in summary["per_patient"]} == {p.stem for p in metrics}
    assert summary["variants"][VARIANT]["dice_mean"]["n"] == len(metrics)


def test_abmseg_bundle_records_the_rule_s_settings_and_weights(run, tmp_path):
    work = run["work"]
    model = work / f"results/models/{VARIANT}/stage2/model.pt"
    out = tmp_path / "bundle"
    assert (
        main(["bundle", "--config", run["config"], "--model", str(model), "--out", str(out),
              "--profile", str(work / "results/qa/training_profile.json")]) == 0
    )  # fmt: skip
    mine = json.loads((out / "bundle.json").read_text())
    rules = json.loads((work / f"results/bundles/{VARIANT}/bundle.json").read_text())
    for key in ("preprocessing", "sampler", "regions", "presets", "networks", "qa"):
        assert mine[key] == rules[key], key


def test_abmseg_export_dicom_writes_the_rule_s_segments(run, tmp_path):
    work, patient = run["work"], run["patient"]
    args = [
        "export-dicom", "--config", run["config"], "--patient", patient,
        "--abm-ct", str(work / f"results/inference/{VARIANT}/{patient}/abm_ct.nii.gz"),
        "--ct", str(run["raw"] / "raw" / patient / "CT"), "--out", str(tmp_path),
        "--prob", str(work / f"results/inference/{VARIANT}/{patient}/abm_prob.nii.gz"),
        "--qa", str(work / f"results/inference/{VARIANT}/{patient}/qa.json"),
    ]  # fmt: skip
    assert main(args) == 0
    rule_prob = work / "results" / "dicom" / VARIANT / patient / "abm_prob_seg.dcm"
    mine, theirs = pydicom.dcmread(tmp_path / "abm_prob_seg.dcm"), pydicom.dcmread(rule_prob)
    np.testing.assert_array_equal(mine.pixel_array, theirs.pixel_array)
    assert mine.SeriesDescription == theirs.SeriesDescription
    assert theirs.SeriesDescription.endswith(" QA " + qa_verdict(work, patient).upper())
    rule_seg = work / "results" / "dicom" / VARIANT / patient / "abm_seg.dcm"
    mine, theirs = pydicom.dcmread(tmp_path / "abm_seg.dcm"), pydicom.dcmread(rule_seg)
    np.testing.assert_array_equal(mine.pixel_array, theirs.pixel_array)
    labels = [s.SegmentLabel for s in mine.SegmentSequence]
    assert labels == [s.SegmentLabel for s in theirs.SegmentSequence]
