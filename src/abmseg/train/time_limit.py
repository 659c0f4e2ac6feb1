"""Training against a wall-time limit: stop cleanly between epochs before the limit, so the
workflow's resubmission (rule ``retries``) resumes from the checkpoint instead of SLURM killing
the job in the middle of an epoch.

Why between epochs: checkpoints are written at the end of every epoch (:mod:`abmseg.train.engine`),
so an epoch cut short by the limit is lost work. Before starting an epoch the trainer asks
:func:`should_stop` whether the slowest epoch seen so far, plus a margin for writing the
checkpoint, still fits before the deadline. The deadline is SLURM's own end time for the job when
the job runs under SLURM (``squeue -o %e``, asked again before every epoch, so an ``scontrol
update TimeLimit=`` during the job counts), else the rule's ``runtime`` resource counted from when
the job started.

A job that stops this way exits with :data:`EXIT_TIME_LIMIT` and says so in its log (torchrun's
processes end with 0 and leave ``status.json`` in :data:`TIME_LIMIT_PHASE`, which
``abmseg.train.cli.launch`` turns into that status, so no worker failure is reported); the rule's
``retries`` (config ``cluster.train_retries``) makes Snakemake submit it again, and the new job
resumes after the last finished epoch. Should SLURM still kill a job at its limit (an epoch far
slower than the ones before), the SIGTERM handler of :func:`stop_on_sigterm` logs it and exits;
the checkpoint of the last finished epoch stands (checkpoint writes are atomic), so the
resubmitted job resumes from there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from abmseg.errors import UserError

EXIT_TIME_LIMIT = 75  # EX_TEMPFAIL: try again later (here: the resubmitted job resumes)
EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a terminated process
MARGIN_SECONDS = 60.0  # checkpoint write, process exit (torchrun, Snakemake) after the last epoch
EPOCH_SAFETY = 1.2  # an epoch may be this much slower than the slowest one seen
SQUEUE_TIMEOUT_S = 15
TIME_LIMIT_PHASE = "time_limit"  # status.json's phase of a run that stopped for its time limit

log = logging.getLogger(__name__)


class TimeLimitStop(UserError):  # noqa: N818 (a planned stop, not an error)
    """Training stopped between epochs because the next epoch would not finish in time."""

    exit_status = EXIT_TIME_LIMIT


def parse_slurm_time(text: str) -> float | None:
    """A SLURM timestamp (``2026-12-07T21:03:04``, local time) as epoch seconds; None for the
    placeholders SLURM prints when there is no end time (``N/A``, ``Unknown``, ``NONE``)."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def slurm_end_time(
    environ: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> float | None:
    """The end time SLURM holds for this job (epoch seconds), or None outside SLURM or when
    squeue cannot tell."""
    environ = os.environ if environ is None else environ
    job = environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        done = run(
            ["squeue", "--noheader", "--jobs", job, "--format", "%e"],
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("squeue did not give job %s's end time (%s)", job, error)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        log.warning("squeue gave no end time for job %s: %s", job, done.stderr.strip())
        return None
    return parse_slurm_time(done.stdout.splitlines()[0])


def job_deadline(
    runtime_minutes: float | None,
    started: float,
    environ: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> tuple[float | None, str]:
    """(deadline in epoch seconds or None, where it came from): SLURM's end time of this job,
    else ``started`` + the rule's ``runtime``; None when neither is known."""
    end = slurm_end_time(environ, run)
    if end is not None:
        return end, "SLURM's end time of this job"
    if runtime_minutes:
        source = f"the rule's runtime ({runtime_minutes} min)"
        return started + 60.0 * float(runtime_minutes), source
    return None, "no time limit"


def current_deadline(
    deadline: float | None,
    environ: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> float | None:
    """The job's deadline now: SLURM's end time as it stands (a time limit may have been changed
    since the job started), else ``deadline`` as it was worked out at the start. None stays
    None: a job without a deadline has no time limit to watch."""
    if deadline is None:
        return None
    end = slurm_end_time(environ, run)
    return deadline if end is None else end


def should_stop(
    now: float,
    deadline: float | None,
    epoch_seconds: float | None,
    margin: float = MARGIN_SECONDS,
) -> bool:
    """Whether the next epoch (``epoch_seconds`` x safety + ``margin``) would end after the
    deadline. Without a deadline or before any epoch was timed, never."""
    if deadline is None or epoch_seconds is None:
        return False
    return now + EPOCH_SAFETY * epoch_seconds + margin > deadline


@contextlib.contextmanager
def stop_on_sigterm(describe: Callable[[], str]) -> Iterator[None]:
    """While inside: SIGTERM (SLURM at the time limit, scancel) logs ``describe()`` and exits
    with :data:`EXIT_SIGTERM` instead of dying without a word. Only in the main thread (signal
    handlers cannot be set elsewhere); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        log.warning("SIGTERM: %s", describe())
        raise SystemExit(EXIT_SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def seconds_left(deadline: float | None, now: float | None = None) -> float | None:
    """Seconds until ``deadline`` (negative once passed), None without one."""
    if deadline is None:
        return None
    return deadline - (time.time() if now is None else now)


__all__ = [
    "EXIT_SIGTERM",
    "TIME_LIMIT_PHASE",
    "current_deadline",
    "EXIT_TIME_LIMIT",
    "TimeLimitStop",
    "job_deadline",
    "parse_slurm_time",
    "seconds_left",
    "should_stop",
    "slurm_end_time",
    "stop_on_sigterm",
]
