"""GPU tags reach the SLURM executor as the request we mean (and none for CPU configurations)."""

from __future__ import annotations

import re

from snakemake_executor_plugin_slurm.utils import set_gres_string

from abmseg.workflow_run import REPO, snakemake_command


class Resources(dict):
    __getattr__ = dict.get


class Job:
    def __init__(self, **resources):
        self.resources = Resources(resources)


def test_executor_turns_our_tags_into_gpu_requests():
    assert set_gres_string(Job(gpu=2, gpu_model="a6000")).strip() == "--gpus=a6000:2"
    assert set_gres_string(Job(gpu=0, gpu_model="")).strip() == ""


def test_cpu_configuration_requests_no_gpu(tiny_cohort, tmp_path):
    import subprocess

    command = snakemake_command(
        tmp_path, tiny_cohort / "patients.tsv", "-n", configfiles=[REPO / "config" / "demo.yaml"]
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    train = re.findall(r"resources: .*gpu=(\d+), gpu_model=(\S*),", output)
    assert train and all(count == "0" and model == "" for count, model in train)


def test_paper_configuration_requests_two_a6000_for_training(tiny_cohort, tmp_path):
    import subprocess

    command = snakemake_command(tmp_path, tiny_cohort / "patients.tsv", "-n", "--forceall")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    jobs = re.findall(r"\brule (\w+):.*?resources: ([^\n]*)", output, flags=re.S)
    by_rule: dict[str, list[str]] = {}
    for rule, resources in jobs:
        by_rule.setdefault(rule, []).append(resources)
    assert all("gpu=2, gpu_model=a6000" in r for r in by_rule["train_stage1"])
    assert all("gpu=2, gpu_model=a6000" in r for r in by_rule["train_stage2"])
    assert all("gpu=1, gpu_model=a6000" in r for r in by_rule["infer"])
    assert all("gpu" not in r for r in by_rule["convert"] + by_rule["register"])
