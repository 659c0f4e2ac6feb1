"""Resume after a real SIGKILL ends with the same weights as an uninterrupted run (CPU).

The runs go through the CLI in subprocesses (same environment, one thread each, so the float
arithmetic is the same in every run). The killer polls ``status.json``, which the engine writes
when an epoch starts, and kills in the middle of the chosen epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import assert_identical, base_config, make_cohort, train

from abmseg.train.progress import read_losses_csv

EPOCHS = 3
# 5 patients x 6 slices, all 30 per epoch: the CycleGAN image pools (50 images) fill during the
# second epoch, so a resume that lost their content or RNG state would diverge.
TRAINING = {"epochs_stage1": EPOCHS, "max_slices_per_epoch": None, "lr_milestones": [2]}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    make_cohort(root / "data", n=5)
    config = root / "config.json"
    config.write_text(json.dumps(base_config(**TRAINING)))
    return {"root": root, "config": config, "sheet": root / "data" / "patients.tsv"}


def command(setup: dict[str, Path], out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "abmseg.train.cli",
        "--stage",
        "1",
        "--variant",
        "full",
        "--config",
        str(setup["config"]),
        "--patients",
        str(setup["sheet"]),
        "--out",
        str(out),
        "--gpus",
        "0",
    ]


def run_to_end(setup: dict[str, Path], out: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(setup, out), env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_during_epoch(
    setup: dict[str, Path], out: Path, epoch: int, signum: int = signal.SIGKILL
) -> str:
    """Start a run and send ``signum`` right after it starts ``epoch`` (0-based); its stderr."""
    process = subprocess.Popen(
        command(setup, out),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    status = out / "status.json"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            if status.exists():
                try:
                    now = json.loads(status.read_text())
                except json.JSONDecodeError:  # written atomically; only a guard
                    now = {}
                if now.get("phase") == "training" and now.get("epoch", -1) >= epoch:
                    break
            time.sleep(0.01)
        else:
            pytest.fail(f"epoch {epoch} never started")
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signum)
    finally:
        _, stderr = process.communicate(timeout=30)
    # SIGKILL cannot be caught; a SIGTERM ends the run through its handler with 128 + 15
    assert process.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
    assert not (out / "model.pt").exists()
    return stderr


@pytest.fixture(scope="module")
def reference(setup) -> Path:
    """The uninterrupted run."""
    out = setup["root"] / "reference"
    run_to_end(setup, out)
    return out / "model.pt"


def test_resume_after_sigkill_matches_uninterrupted_run(setup, reference):
    out = setup["root"] / "killed"
    kill_during_epoch(setup, out, epoch=1)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 0  # the killed epoch left no trace
    result = run_to_end(setup, out)
    assert "resuming stage 1 of full after epoch 1/3" in result.stderr
    assert_identical(reference, out / "model.pt")
    timing = ("seconds", "slices_per_s", "validation_seconds")
    resumed, uninterrupted = (
        [{k: v for k, v in row.items() if k not in timing} for row in read_losses_csv(path)]
        for path in (out / "losses.csv", reference.parent / "losses.csv")
    )
    assert len(resumed) == EPOCHS and resumed == uninterrupted


def test_sigterm_says_where_it_stopped_and_the_resume_matches(setup, reference):
    """SLURM's SIGTERM at a time limit: a logged, clean exit (143) and an identical resume."""
    out = setup["root"] / "terminated"
    stderr = kill_during_epoch(setup, out, epoch=1, signum=signal.SIGTERM)
    assert "SIGTERM: stage 1 of full terminated during epoch 2/3" in stderr, stderr[-2000:]
    assert "resumes with epoch 2" in stderr
    assert "Traceback" not in stderr
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 0
    assert list((out / "checkpoints").glob(".ckpt-*")) == []  # no half-written checkpoint
    run_to_end(setup, out)
    assert_identical(reference, out / "model.pt")


def test_resume_falls_back_to_previous_when_last_is_truncated(setup, reference):
    out = setup["root"] / "truncated"
    kill_during_epoch(setup, out, epoch=2)
    last = out / "checkpoints" / "last.pt"
    size = last.stat().st_size
    with open(last, "r+b") as handle:
        handle.truncate(size // 2)
    result = run_to_end(setup, out)
    assert "damaged" in result.stderr and "after epoch 1/3" in result.stderr  # previous.pt
    assert_identical(reference, out / "model.pt")


def test_extending_a_finished_stage2_continues_identically(tmp_path):
    """Stage 2 resume in-process: 1 epoch, then the same run extended to 2 == 2 epochs at once."""
    cohort = make_cohort(tmp_path / "data")
    stage1 = train(cohort, tmp_path / "s1", "full")
    once = train(cohort, tmp_path / "once", "full", stage=2, init=stage1, epochs_stage2=2)
    train(cohort, tmp_path / "twice", "full", stage=2, init=stage1, epochs_stage2=1)
    twice = train(cohort, tmp_path / "twice", "full", stage=2, init=stage1, epochs_stage2=2)
    assert_identical(once, twice)
