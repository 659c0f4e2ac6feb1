"""Training against a wall-time limit: the deadline, the stop rule, and a stop between epochs
that a later job resumes to the same weights as an uninterrupted run."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime

import pytest
import torch
from test_train import assert_identical, make_cohort, settings

from abmseg.errors import ConfigError
from abmseg.train.engine import TrainJob, run_training
from abmseg.train.time_limit import (
    EPOCH_SAFETY,
    MARGIN_SECONDS,
    TimeLimitStop,
    current_deadline,
    job_deadline,
    parse_slurm_time,
    should_stop,
    slurm_end_time,
)


def test_parse_slurm_time_reads_local_iso_times_and_placeholders():
    expected = datetime(2026, 12, 7, 21, 3, 4).timestamp()  # local time, as squeue prints it
    assert parse_slurm_time("2026-12-07T21:03:04\n") == expected
    for placeholder in ("N/A", "Unknown", "NONE", ""):
        assert parse_slurm_time(placeholder) is None


def _squeue(stdout: str, returncode: int = 0):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, returncode, stdout, "no such job")

    return run, calls


def test_the_deadline_is_slurms_end_time_inside_a_job_else_the_runtime():
    run, calls = _squeue("2026-12-07T21:03:04\n")
    deadline, source = job_deadline(60, 1000.0, {"SLURM_JOB_ID": "42"}, run)
    assert deadline == datetime(2026, 12, 7, 21, 3, 4).timestamp()
    assert "SLURM" in source
    assert calls == [["squeue", "--noheader", "--jobs", "42", "--format", "%e"]]
    # outside SLURM, or when squeue cannot tell: start + runtime minutes
    assert job_deadline(60, 1000.0, {}, run)[0] == 1000.0 + 3600.0
    failing, _ = _squeue("", returncode=1)
    assert job_deadline(2.5, 1000.0, {"SLURM_JOB_ID": "42"}, failing)[0] == 1000.0 + 150.0
    assert job_deadline(None, 1000.0, {}, run) == (None, "no time limit")
    assert slurm_end_time({}, run) is None


def test_the_deadline_follows_a_time_limit_changed_during_the_job():
    moved, _ = _squeue("2026-12-07T20:00:00\n")  # an `scontrol update TimeLimit=` since the start
    assert current_deadline(5000.0, {"SLURM_JOB_ID": "42"}, moved) == parse_slurm_time(
        "2026-12-07T20:00:00"
    )
    failing, _ = _squeue("", returncode=1)
    assert current_deadline(5000.0, {"SLURM_JOB_ID": "42"}, failing) == 5000.0
    assert current_deadline(5000.0, {}, moved) == 5000.0
    assert current_deadline(None, {"SLURM_JOB_ID": "42"}, moved) is None


def test_should_stop_when_the_next_epoch_would_end_after_the_deadline():
    now, epoch = 1000.0, 100.0
    fits = now + EPOCH_SAFETY * epoch + MARGIN_SECONDS  # the last start time that still fits
    assert not should_stop(now, fits + 1.0, epoch)
    assert should_stop(now, fits - 1.0, epoch)
    assert not should_stop(now, None, epoch)  # no limit
    assert not should_stop(now, now + 1.0, None)  # nothing timed yet: run the first epoch


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("time_limit_cohort"), n=3)


def test_a_stop_before_the_limit_resumes_to_the_uninterrupted_weights(cohort, tmp_path):
    config = settings(epochs_stage1=3)
    reference = run_training(TrainJob(1, "full", config, cohort, tmp_path / "reference"))
    out = tmp_path / "limited"
    # A limit closer than the margin: the first epoch runs (nothing is timed before it), then
    # the run must stop rather than start a second epoch it cannot finish.
    job = TrainJob(1, "full", config, cohort, out, deadline=time.time() + MARGIN_SECONDS / 2)
    with pytest.raises(TimeLimitStop, match=r"after epoch 1/3 .* resumes with epoch 2"):
        run_training(job)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    assert not (out / "model.pt").exists()
    # The next job of that run has too little time for even one epoch: a clear error, no stop
    # loop. Then one with time enough finishes.
    cramped = TrainJob(1, "full", config, cohort, out, deadline=time.time() + 1.0)
    with pytest.raises(ConfigError, match="cannot finish one.*resources.train_stage1.runtime"):
        run_training(cramped)
    resumed = run_training(TrainJob(1, "full", config, cohort, out, deadline=time.time() + 3600))
    assert_identical(reference, resumed)
