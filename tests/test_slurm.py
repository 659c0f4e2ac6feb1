"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/slurm/cluster.sh) with
two fake a6000 GPUs: SLURM's own accounting (sacct) must show that every job completed, that the
GPU rules were given the GPUs they asked for and the CPU rules none.

Needs root and the Debian SLURM packages (`bash tests/slurm/cluster.sh install`); skipped
without them, unless ABMSEG_REQUIRE_SLURM=1 (CI), where their absence fails the test.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_folders

from abmseg.workflow_run import REPO, snakemake_command

pytestmark = pytest.mark.slow

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
GPU_CONFIG = REPO / "tests" / "slurm" / "gpus.yaml"
PROGRAMS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# Hard bound on the whole Snakemake run (SIGTERM, then SIGKILL 30 s later): with a broken status
# query, Snakemake would otherwise wait forever.
PIPELINE_LIMIT_S = 900
GPU_RULES = {"train_stage1": 2, "train_stage2": 2, "infer": 1}
CPU_RULES = {
    "convert",
    "register",
    "crop",
    "normalise",
    "split",
    "metrics",
    "aggregate",
    "figure",
    "registration_figure",
    "export_dicom",
    "bundle",
    "training_profile",
    "qa",
    "qa_table",
    "results_page",
}
SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "Comment", "AllocTRES", "Partition")


def missing_requirement() -> str | None:
    """Why this machine cannot host the test cluster, or None."""
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (daemons, mknod, /etc/slurm)"
    missing = [p for p in PROGRAMS if shutil.which(p, path=SBIN_PATH) is None]
    if missing:
        return (
            f"SLURM/munge/MariaDB programs missing: {', '.join(missing)} "
            f"(run `bash {CLUSTER.relative_to(REPO)} install` as root)"
        )
    return None


def cluster_script(command: str, state: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER), command, str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def slurm_cluster(request):
    """A running cluster, stopped by PID file when the module ends, whatever happened."""
    reason = missing_requirement()
    if reason:
        if os.environ.get("ABMSEG_REQUIRE_SLURM") == "1":
            pytest.fail(f"ABMSEG_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    # Not under pytest's tmp folder: that is private to root, and the daemons run as the slurm,
    # munge and mysql users.
    state = Path(tempfile.mkdtemp(prefix="abmseg-slurm-", dir="/tmp"))
    state.chmod(0o755)

    def stop():
        result = cluster_script("stop", state, timeout=180)
        assert result.returncode == 0, f"cluster stop failed:\n{result.stderr[-4000:]}"
        shutil.rmtree(state, ignore_errors=True)

    request.addfinalizer(stop)
    started = time.monotonic()
    result = cluster_script("start", state, timeout=300)
    if result.returncode != 0:
        pytest.fail(
            f"cluster start failed (exit code {result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-8000:]}"
        )
    return {"state": state, "start_s": time.monotonic() - started}


def run_under_slurm(
    work: Path,
    sheet: Path,
    *targets: str,
    configfiles: list[Path],
    meanwhile: Callable[[], None] | None = None,
) -> dict:
    """`snakemake --profile slurm` in ``work`` (bounded in time), calling ``meanwhile`` about
    every second while it runs; its output, duration and the run's jobs and job steps in sacct."""
    command = snakemake_command(
        work,
        sheet,
        "--profile",
        "slurm",
        # Only timing figures of the profile are overridden (a status check 2 s after
        # submission instead of 20; no shared-filesystem delay on one node).
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
        *targets,
        configfiles=configfiles,
    )
    # Jobs re-run `python -m snakemake` with --export=ALL: this venv's bin must come first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), SBIN_PATH])
    since = (datetime.now() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as output:  # a file, not a pipe: it never fills up
        process = subprocess.Popen(
            ["timeout", "-k", "30", str(PIPELINE_LIMIT_S), *command],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            while process.poll() is None:
                if meanwhile is not None:
                    meanwhile()
                time.sleep(1)
        finally:
            process.wait(timeout=PIPELINE_LIMIT_S + 60)
        output.seek(0)
        log = output.read()
    seconds = time.monotonic() - started
    assert process.returncode == 0, f"snakemake exit {process.returncode}:\n{log[-8000:]}"
    # The plugin names every job of a run after the run's UUID.
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, f"no 'SLURM run ID' in Snakemake's output:\n{log[-4000:]}"
    jobs = sacct("-X", "--name", run_id.group(1), "--starttime", since)
    steps = sacct("--jobs", ",".join(job["JobIDRaw"] for job in jobs)) if jobs else []
    return {"work": work, "log": log, "jobs": jobs, "steps": steps, "seconds": seconds}


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """One tiny pipeline run through `snakemake --profile slurm`, and its jobs in sacct."""
    run = run_folders(tmp_path_factory, "slurm_run")
    configfiles = [REPO / "config" / "demo.yaml", run["fast"], GPU_CONFIG]
    done = run_under_slurm(run["work"], run["sheet"], configfiles=configfiles)
    print(
        f"\nSLURM test: cluster start {slurm_cluster['start_s']:.0f} s, "
        f"pipeline {done['seconds']:.0f} s",
        file=sys.stderr,
    )
    return {**done, "sheet": run["sheet"], "configfiles": configfiles}


def sacct(*args: str) -> list[dict[str, str]]:
    """sacct's parsable rows (Comment last but one: the plugin's comment has no '|')."""
    output = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--format", ",".join(SACCT_FIELDS), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in output.splitlines()]


def rule_of(job: dict[str, str]) -> str:
    """The rule from the plugin's comment: rule_<name> or rule_<name>_wildcards_<values>."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", job["Comment"])
    assert match, f"job {job['JobIDRaw']} has no rule comment: {job}"
    return match.group(1)


def gpus_of(job: dict[str, str]) -> int:
    return int(tres_of(job).get("gres/gpu", 0))


def tres_of(job: dict[str, str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job["AllocTRES"].split(",") if "=" in item)


def configured_resources() -> dict[str, dict]:
    """config['resources'] as this run merges it: config.yaml, then demo.yaml over it."""
    merged: dict[str, dict] = {}
    for name in ("config.yaml", "demo.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        for rule, values in config.get("resources", {}).items():
            merged.setdefault(rule, {}).update(values)
    return merged


def expected_jobs(work: Path) -> Counter:
    """Jobs per rule, from the run's own split: preprocessing per patient, training once,
    inference, QA, metrics and DICOM export per test patient, figures for the first three test
    patients, a registration figure per patient, one model bundle, training profile and QA
    table."""
    rows = (work / "results" / "split.tsv").read_text().splitlines()[1:]
    subsets = [line.split("\t")[1] for line in rows]
    n, n_test = len(subsets), subsets.count("test")
    return Counter(
        convert=n,
        register=n,
        crop=n,
        normalise=n,
        split=1,
        train_stage1=1,
        train_stage2=1,
        infer=n_test,
        metrics=n_test,
        aggregate=1,
        figure=min(3, n_test),
        registration_figure=n,
        export_dicom=n_test,
        bundle=1,
        training_profile=1,
        qa=n_test,
        qa_table=1,
        results_page=1,
    )


def test_pipeline_finishes_under_slurm(slurm_run):
    assert (slurm_run["work"] / "results" / "metrics" / "summary.md").is_file()


def test_every_job_and_step_completed(slurm_run):
    assert slurm_run["jobs"], "sacct lists no job of this run"
    failed = [j for j in slurm_run["jobs"] if (j["State"], j["ExitCode"]) != ("COMPLETED", "0:0")]
    assert not failed, failed
    # Steps too (batch, extern, the in-job srun): a job can end COMPLETED with a failed step.
    failed = [s for s in slurm_run["steps"] if (s["State"], s["ExitCode"]) != ("COMPLETED", "0:0")]
    assert not failed, failed


def test_sacct_shows_every_rule_and_job_of_the_run(slurm_run):
    seen = Counter(rule_of(job) for job in slurm_run["jobs"])
    expected = expected_jobs(slurm_run["work"])
    assert set(seen) == set(GPU_RULES) | CPU_RULES
    assert seen == expected
    assert len(slurm_run["jobs"]) == sum(expected.values())


def test_gpu_rules_got_their_gpus_and_cpu_rules_none(slurm_run):
    for job in slurm_run["jobs"]:
        rule = rule_of(job)
        want = GPU_RULES.get(rule, 0)
        assert gpus_of(job) == want, f"{rule}: AllocTRES {job['AllocTRES']}, want gres/gpu={want}"
        assert job["Partition"] == ("gpu" if want else "cpu"), (rule, job["Partition"])


def test_training_ran_one_process_per_allocated_gpu(slurm_run):
    for stage in ("train_stage1", "train_stage2"):
        text = (slurm_run["work"] / "logs" / stage / "full.log").read_text()
        assert "2 process(es)" in text, text[-2000:]


def test_jobs_got_the_cores_and_memory_the_config_gives_them(slurm_run):
    """threads is the job's core count, GPU jobs included (one task; torchrun spawns the
    per-GPU processes itself), and mem_mb its memory."""
    resources = configured_resources()
    for job in slurm_run["jobs"]:
        rule = rule_of(job)
        tres = tres_of(job)
        # as common.smk's res(): a rule without an entry of its own takes aggregate's
        want = resources.get(rule, resources["aggregate"])
        assert tres.get("cpu") == str(want["threads"]), (rule, job["AllocTRES"], want)
        assert tres.get("mem") == f"{want['mem_mb']}M", (rule, job["AllocTRES"], want)


# --------------------------------------------------------------------------- wall-time limits

# The cyclegan variant's stage 1 (not trained by the run above) on the run's normalised volumes,
# 2 fake GPUs = 2 gloo processes on the CPU, epochs of seconds. Once its first job has saved an
# epoch, the test cuts that job's SLURM time limit to one second (`scontrol update`, as a queue's
# limit arriving): the job must stop at its next epoch boundary (or be killed by SLURM), and the
# rule's retries resubmit it with the configured 10 minutes, where it resumes and finishes.
# Cutting the limit once an epoch is saved makes the test as deterministic as the machine is
# fast or slow: a fixed short limit either never bites on a fast machine or leaves a slow one
# no time for an epoch.
WALL_TIME = """
variants: [full, cyclegan]
training: {epochs_stage1: 6, max_slices_per_epoch: 32}
resources:
  train_stage1: {threads: 2, mem_mb: 4000, runtime: 10}
cluster: {train_retries: 2}
"""
WALL_TIME_VARIANT = "cyclegan"
WALL_TIME_COMMENT = f"rule_train_stage1_wildcards_{WALL_TIME_VARIANT}"


class LimitCutter:
    """Called while Snakemake runs: cuts the first training job's time limit to 1 s as soon as
    that job has saved an epoch; remembers the job."""

    def __init__(self, status: Path) -> None:
        self.status = status
        self.job: str | None = None

    def __call__(self) -> None:
        if self.job is not None or not self.status.is_file():
            return
        try:
            status = json.loads(self.status.read_text())
        except json.JSONDecodeError:  # written atomically; only a guard
            return
        epoch = int(status.get("epoch", -1))  # 0-based; "training" = begun, "saved" = done
        if (epoch + 1 if status.get("phase") == "saved" else epoch) < 1:
            return
        queue = subprocess.run(
            ["squeue", "--noheader", "--format", "%i %k"], capture_output=True, text=True
        ).stdout.split("\n")
        ids = [line.split()[0] for line in queue if line.strip().endswith(WALL_TIME_COMMENT)]
        if ids:
            self.job = ids[0]
            subprocess.run(
                ["scontrol", "update", f"JobId={self.job}", "TimeLimit=0:01"],
                check=True,
                capture_output=True,
            )


@pytest.fixture(scope="module")
def time_limited_training(slurm_run, tmp_path_factory):
    """The cyclegan stage 1 whose first job's time limit is cut, through SLURM; then the same
    training uninterrupted through the CLI (torchrun, 2 processes) as the reference."""
    root = tmp_path_factory.mktemp("wall_time")
    overrides = root / "wall_time.yaml"
    overrides.write_text(WALL_TIME)
    configfiles = [*slurm_run["configfiles"], overrides]
    work = slurm_run["work"]
    target = f"results/models/{WALL_TIME_VARIANT}/stage1/model.pt"
    cutter = LimitCutter(work / Path(target).parent / "status.json")
    keep_logs = "--slurm-keep-successful-logs"  # the resumed job's log is read below
    # The reference trains meanwhile (Snakemake mostly waits on SLURM): the weights do not
    # depend on timing, and CI saves the reference's minute.
    reference = start_reference(work, configfiles, root / "reference")
    try:
        done = run_under_slurm(
            work, slurm_run["sheet"], keep_logs, target, configfiles=configfiles, meanwhile=cutter
        )
    finally:
        reference.wait(timeout=600)
    print(f"\nSLURM wall-time test: {done['seconds']:.0f} s", file=sys.stderr)
    assert reference.returncode == 0, (root / "reference" / "train.log").read_text()[-4000:]
    model = root / "reference" / "model.pt"
    return {**done, "model": work / target, "reference": model, "cut": cutter.job}


def start_reference(work: Path, configfiles: list[Path], out: Path) -> subprocess.Popen:
    """The same stage trained in one go by `abmseg train` on the run's split and volumes (into
    ``out``), with the job's thread count (the float arithmetic must be the same)."""
    config: dict = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path in configfiles:
        for key, value in yaml.safe_load(Path(path).read_text()).items():
            merged = isinstance(value, dict) and isinstance(config.get(key), dict)
            config[key] = {**config[key], **value} if merged else value
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    rows = ["patient_id\tfolder\tsubset"]
    for line in (work / "results" / "split.tsv").read_text().splitlines()[1:]:
        patient, subset = line.split("\t")
        if subset != "test":
            rows.append(f"{patient}\t{work / 'results' / 'normalized' / patient}\t{subset}")
    (out / "patients.tsv").write_text("\n".join(rows) + "\n")
    threads = str(config["resources"]["train_stage1"]["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [sys.executable, "-m", "abmseg.train.cli", "--stage", "1", "--variant",
               WALL_TIME_VARIANT, "--config", str(out / "config.yaml"), "--patients",
               str(out / "patients.tsv"), "--out", str(out), "--gpus", "2"]  # fmt: skip
    with open(out / "train.log", "w") as log:  # a file, not a pipe: it never fills up
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_a_job_at_its_time_limit_is_resubmitted_and_resumes(time_limited_training):
    cut = time_limited_training["cut"]
    assert cut is not None, "the training job never saved an epoch while it ran"
    jobs = sorted(
        (j for j in time_limited_training["jobs"] if rule_of(j) == "train_stage1"),
        key=lambda job: int(job["JobIDRaw"]),
    )
    assert [job["JobIDRaw"] for job in jobs][0] == cut and len(jobs) == 2, jobs
    first, second = jobs
    # It stopped itself at the next epoch boundary (FAILED: the job's Snakemake reports the
    # rule's exit status 75 as a failure, 1), or SLURM killed it at the limit first (TIMEOUT,
    # after the SIGTERM the trainer logs).
    assert first["State"] in {"FAILED", "TIMEOUT"}, first
    assert (second["State"], second["ExitCode"]) == ("COMPLETED", "0:0"), second
    work = time_limited_training["work"]
    logs = work / ".snakemake" / "slurm_logs" / "rule_train_stage1" / WALL_TIME_VARIANT
    first_log = (logs / f"{first['JobIDRaw']}.log").read_text()
    planned = "stopped before its time limit" in first_log
    if planned:
        assert "exit status 75: a resubmitted job resumes this training" in first_log
        assert "ChildFailedError" not in first_log  # the processes ended cleanly
    else:
        assert "SIGTERM: stage 1 of cyclegan terminated" in first_log, first_log[-4000:]
    print(f"\nthe cut job ended {first['State']} ({'stopped' if planned else 'SIGTERM'})")
    second_log = (logs / f"{second['JobIDRaw']}.log").read_text()
    assert "resuming stage 1 of cyclegan after epoch" in second_log, second_log[-4000:]


def test_the_resumed_model_equals_an_uninterrupted_run(time_limited_training):
    from abmseg.models.trained_model import read_trained_model

    resumed = read_trained_model(time_limited_training["model"])
    reference = read_trained_model(time_limited_training["reference"])
    assert resumed["epochs"] == reference["epochs"] == 6
    assert resumed["validation_patients"] == reference["validation_patients"] != []
    different = [
        f"{net}.{key}"
        for net, tensors in reference["state"].items()
        for key, tensor in tensors.items()
        if not torch.equal(tensor, resumed["state"][net][key])
    ]
    assert different == []

    def validation_curve(model: dict) -> list[float | None]:  # NaN (no region anywhere) as None
        return [None if math.isnan(v := row["val_dice_mean"]) else v for row in model["history"]]

    assert len(validation_curve(resumed)) == 6
    assert validation_curve(resumed) == validation_curve(reference)
