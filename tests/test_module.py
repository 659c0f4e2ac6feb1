"""The workflow as a Snakemake module: the shared run (conftest `pipeline`) was deployed with
snakedeploy into its own work folder and run there with that folder's config; these tests check
what the deployment holds and what the run made."""

from __future__ import annotations

import csv
import re

import pytest
import yaml
from conftest import pipeline_snakemake
from deploy import REPO


@pytest.mark.slow
def test_snakedeploy_wrote_a_module_deployment(pipeline):
    work = pipeline["work"]
    snakefile = (work / "workflow" / "Snakefile").read_text()
    assert re.search(r"^module abmseg:", snakefile, re.M)
    assert re.search(r"^use rule \* from abmseg", snakefile, re.M)
    assert 'configfile: "config/config.yaml"' in snakefile
    # the user's own copy of the config, as the catalogue's deployments have
    deployed = yaml.safe_load((work / "config" / "config.yaml").read_text())
    assert deployed == yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert (work / "config" / "README.md").is_file()
    assert (work / "profiles" / "default" / "config.yaml").is_file()
    # the module runs from the release tree, not from a checkout of its own in the work folder
    assert not (work / "workflow" / "rules").exists()
    assert not (work / "scripts").exists()


@pytest.mark.slow
def test_the_module_run_finished_with_its_summary(pipeline):
    summary = pipeline["work"] / "results" / "metrics" / "summary.tsv"
    rows = list(csv.DictReader(summary.open(), delimiter="\t"))
    assert rows, "summary.tsv has no rows"
    split = list(
        csv.DictReader((pipeline["work"] / "results" / "split.tsv").open(), delimiter="\t")
    )
    # 4 on the training side, of which the validation hash holds SYN006 out of the fitting
    assert sorted(r["subset"] for r in split) == ["test"] * 2 + ["train"] * 3 + ["validation"]
    metrics = {r["metric"]: r for r in rows if r["variant"] == "full"}
    assert {"psnr_db", "ssim", "nmse"} <= set(metrics)
    dice = [float(r["mean"]) for m, r in metrics.items() if m.startswith("dice")]
    assert dice and all(0.0 <= d <= 1.0 for d in dice)
    # the fast test config trains one epoch: its masks may be empty (ASSD undefined, n = 0)
    assert all(int(r["n"]) + int(r["n_undefined"]) == 2 for r in metrics.values())
    assert (pipeline["work"] / "results" / "metrics" / "summary.md").stat().st_size > 0
    page = (pipeline["work"] / "results" / "report" / "results.html").read_text(encoding="utf-8")
    assert "tiny</b> network preset" in page  # the demo config's networks
    for row in split:
        assert f">{row['patient_id']}<" in page  # registration QC of every patient


@pytest.mark.slow
def test_the_deployment_is_up_to_date_and_its_rules_keep_their_names(pipeline):
    """A dry run through the deployment plans nothing; rule names come through `use rule *`
    unchanged (a profile's per-rule settings keep working)."""
    dry = pipeline_snakemake(
        pipeline["work"], pipeline["sheet"], pipeline["fast"], "-n", "--list-rules"
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    listed = set(dry.stdout.split())
    assert {"all", "convert", "train_stage1", "infer", "aggregate", "export_dicom"} <= listed
    again = pipeline_snakemake(pipeline["work"], pipeline["sheet"], pipeline["fast"], "-n")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
