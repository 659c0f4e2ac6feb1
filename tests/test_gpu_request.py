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


def planned_resources(tiny_cohort, tmp_path, *config: str) -> dict[str, list[str]]:
    """Rule -> the resources line of each of its jobs in a dry run of the paper configuration."""
    import subprocess

    command = snakemake_command(
        tmp_path, tiny_cohort / "patients.tsv", "-n", "--forceall", config=config
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    jobs = re.findall(r"\brule (\w+):.*?resources: ([^\n]*)", output, flags=re.S)
    by_rule: dict[str, list[str]] = {}
    for rule, resources in jobs:
        by_rule.setdefault(rule, []).append(resources)
    return by_rule


GPU_RULES = {"train_stage1", "train_stage2", "infer"}


def test_paper_configuration_requests_two_a6000_for_training(tiny_cohort, tmp_path):
    by_rule = planned_resources(tiny_cohort, tmp_path)
    assert all("gpu=2, gpu_model=a6000" in r for r in by_rule["train_stage1"])
    assert all("gpu=2, gpu_model=a6000" in r for r in by_rule["train_stage2"])
    assert all("gpu=1, gpu_model=a6000" in r for r in by_rule["infer"])
    assert all("gpu" not in r for r in by_rule["convert"] + by_rule["register"])


def test_gpu_rules_go_to_the_gpu_partition_and_the_rest_to_the_cpu_partition(tiny_cohort, tmp_path):
    by_rule = planned_resources(tiny_cohort, tmp_path)
    assert set(by_rule) >= GPU_RULES | {"convert", "register", "metrics", "aggregate", "figure"}
    for rule, lines in by_rule.items():
        if rule == "all":  # a local target: never submitted
            continue
        partition = "gpu" if rule in GPU_RULES else "cpu"
        assert all(f"slurm_partition={partition}," in line for line in lines), (rule, lines)
        assert all("slurm_account" not in line for line in lines)
    assert all("cpus_per_task=8," in line for line in by_rule["train_stage1"])
    # one task for all GPUs, so SLURM allocates cpus_per_task once, not once per GPU
    assert all("tasks_per_gpu=0" in line for rule in GPU_RULES for line in by_rule[rule])
    assert all("cpus_per_task=2," in line for line in by_rule["register"])
    assert all(
        "mem_mb=64000," in line and "runtime=2880," in line for line in by_rule["train_stage1"]
    )


def test_cluster_names_and_account_come_from_config(tiny_cohort, tmp_path):
    by_rule = planned_resources(
        tiny_cohort,
        tmp_path,
        "cluster={'cpu_partition': 'short', 'gpu_partition': 'a100q', 'account': 'radonc'}",
    )
    assert all("slurm_partition=a100q," in line for line in by_rule["infer"])
    assert all("slurm_partition=short," in line for line in by_rule["convert"])
    submitted = [line for rule, lines in by_rule.items() if rule != "all" for line in lines]
    assert all("slurm_account=radonc" in line for line in submitted)
