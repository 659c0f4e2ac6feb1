"""``abmseg train`` / ``python -m abmseg.train.cli``: train one stage of one variant.

    python -m abmseg.train.cli --stage 1 --variant full --config config.json \\
        --patients train.tsv --out results/train/full/stage1 [--gpus 2]
    python -m abmseg.train.cli --stage 2 --variant full ... --init results/.../stage1/model.pt

``--config`` is the workflow's whole config dict (JSON, or YAML); ``--patients`` a TSV with
columns ``patient_id`` and ``folder`` (the normalised ct/pet/label.nii.gz) and optionally
``subset``: rows with ``validation`` there are scored after every epoch, not fitted on. Under
SLURM the job's end time is the deadline training stops before (abmseg.train.time_limit).
The CLI builds a ``TrainJob`` and hands it to :func:`launch`, as rules train_stage1/2 do: with
``--gpus N`` > 1 that writes the job to ``OUT/job.json`` and runs
``python -m torch.distributed.run --standalone --nproc_per_node N -m abmseg.train.cli --job ...``
as a child (one process per GPU; on a CPU-only machine N gloo processes), forwards SIGTERM/SIGINT
to it and returns its exit status. Rerunning the same command after a crash resumes from
``OUT/checkpoints``. Messages go through ``logging`` (configured to stderr at INFO unless the
caller, e.g. a Snakemake rule script, configured logging already).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abmseg.atomic import write_json
from abmseg.errors import ConfigError, UserError
from abmseg.regions import DEFAULT_REGIONS
from abmseg.settings import read_config as read_workflow_config
from abmseg.train.distributed import BACKENDS, launched_by_torchrun
from abmseg.train.time_limit import (
    EXIT_TIME_LIMIT,
    TIME_LIMIT_PHASE,
    TimeLimitStop,
    job_deadline,
)
from abmseg.variants import VARIANTS

if TYPE_CHECKING:
    from abmseg.train.engine import TrainJob

TORCHRUN_MODULE = "torch.distributed.run"
JOB_FILE = "job.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abmseg train", description="Train one stage of one ablation variant (resumable)."
    )
    parser.add_argument("--stage", type=int, choices=(1, 2))
    parser.add_argument("--variant", choices=list(VARIANTS))
    parser.add_argument("--config", type=Path, help="whole config (JSON or YAML)")
    parser.add_argument("--patients", type=Path, help="TSV: patient_id, folder (normalised images)")
    parser.add_argument("--out", type=Path, help="output folder of this stage")
    parser.add_argument("--init", type=Path, help="stage 2: the stage-1 model.pt")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="processes (one per GPU); 0 = CPU only; > 1 launches torchrun (default 1)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="DDP backend (default: nccl on GPU)")
    parser.add_argument(
        "--job", type=Path, help="a job.json written by launch() (each torchrun process reads it)"
    )
    return parser


def read_config(path: Path) -> dict[str, Any]:
    """The config dict from JSON or YAML (JSON is YAML)."""
    return read_workflow_config(path)


def read_patients(path: Path) -> list[tuple[str, Path]]:
    """(patient_id, folder) rows to fit on; see :func:`read_patient_sheet`."""
    return read_patient_sheet(path)[0]


def read_patient_sheet(path: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(patients to fit on, validation patients) as (patient_id, folder): rows whose optional
    ``subset`` column says ``validation`` are validation patients. Relative folders resolve
    against the sheet's folder, falling back to the working directory when only that exists."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"patient_id", "folder"} <= set(rows[0]):
        raise ConfigError(
            f"{path} has no header with columns patient_id and folder, or no rows",
            "write a TSV with those two columns and one row per training patient",
        )
    fit, validation = [], []
    for row in rows:
        folder = Path(row["folder"])
        if not folder.is_absolute():
            beside = path.parent / folder
            folder = beside if beside.exists() or not folder.exists() else folder
        side = validation if (row.get("subset") or "").strip() == "validation" else fit
        side.append((row["patient_id"], folder))
    return fit, validation


def torchrun_command(gpus: int, argv: Sequence[str]) -> list[str]:
    """The command that runs this CLI once per process under torch.distributed.run."""
    return [
        sys.executable,
        "-m",
        TORCHRUN_MODULE,
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "abmseg.train.cli",
        *argv,
    ]


def run_forwarding_signals(command: Sequence[str]) -> int:
    """Run ``command``; a SIGTERM/SIGINT to this process is passed on (torchrun then stops its
    workers) instead of orphaning the child. Returns the child's exit status."""
    process = subprocess.Popen(list(command))
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda sig, _: process.send_signal(sig))
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def configure_logging() -> None:
    """INFO messages to stderr, unless the caller configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def job_to_json(job: TrainJob) -> dict[str, Any]:
    """A TrainJob as plain JSON: what each torchrun process reads back (``--job``)."""
    return {
        "stage": job.stage,
        "variant": job.variant,
        "settings": job.settings.to_dict(),
        "patients": [[patient, str(folder)] for patient, folder in job.patients],
        "out": str(job.out),
        "init": str(job.init) if job.init else None,
        "device": job.device,
        "backend": job.backend,
        "validation": [[patient, str(folder)] for patient, folder in job.validation],
        "regions": dict(job.regions),
        "deadline": job.deadline,
    }


def job_from_json(data: dict[str, Any]) -> TrainJob:
    from abmseg.train.engine import TrainJob
    from abmseg.train.settings import TrainSettings

    return TrainJob(
        stage=int(data["stage"]),
        variant=data["variant"],
        settings=TrainSettings.from_dict(data["settings"]),
        patients=[(patient, Path(folder)) for patient, folder in data["patients"]],
        out=Path(data["out"]),
        init=Path(data["init"]) if data["init"] else None,
        device=data["device"],
        backend=data["backend"],
        validation=[(patient, Path(folder)) for patient, folder in data.get("validation", [])],
        regions=data.get("regions") or dict(DEFAULT_REGIONS),
        deadline=data.get("deadline"),
    )


def launch(job: TrainJob, gpus: int) -> int:
    """Train ``job`` with one process per GPU; returns the exit status.

    0 GPUs trains on the CPU and 1 on the GPU, in this process. More start torchrun, whose
    processes read the job from ``OUT/job.json``: it stays beside the model as the run's own
    description, so no temporary file or second argument parser sits between a caller and the
    training (rules train_stage1/2 and ``abmseg train`` both come here).
    """
    from abmseg.train.engine import run_training

    if gpus > 1 and not launched_by_torchrun():
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < gpus:
            raise ConfigError(
                f"{gpus} GPUs asked for but only {torch.cuda.device_count()} visible",
                "lower the GPU count (config gpu.train.count, or --gpus)",
            )
        job_file = Path(job.out) / JOB_FILE
        write_json(job_file, job_to_json(job))
        sys.stdout.flush()
        sys.stderr.flush()
        status = run_forwarding_signals(torchrun_command(gpus, ["--job", str(job_file)]))
        return EXIT_TIME_LIMIT if status == 0 and stopped_for_time(job.out) else status
    configure_logging()
    try:
        run_training(dataclasses.replace(job, device="cpu") if gpus == 0 else job)
    except TimeLimitStop as stop:  # not a failure: the resubmitted job resumes
        logging.getLogger(__name__).warning("%s", stop)
        return EXIT_TIME_LIMIT
    return 0


def stopped_for_time(out: Path) -> bool:
    """Whether the run in ``out`` last stopped before its time limit (status.json says so)."""
    try:
        return json.loads((Path(out) / "status.json").read_text()).get("phase") == TIME_LIMIT_PHASE
    except (OSError, ValueError):
        return False


def job_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainJob:
    from abmseg.train.engine import TrainJob
    from abmseg.train.settings import TrainSettings

    missing = [f"--{name}" for name in ("stage", "variant", "config", "patients", "out")
               if getattr(args, name) is None]  # fmt: skip
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.stage == 2 and args.init is None:
        parser.error("stage 2 needs --init STAGE1/model.pt")
    config = read_config(args.config)
    fit, validation = read_patient_sheet(args.patients)
    return TrainJob(
        stage=args.stage,
        variant=args.variant,
        settings=TrainSettings.from_config(config),
        patients=fit,
        out=args.out,
        init=args.init,
        backend=args.backend,
        validation=validation,
        regions=config.get("regions") or dict(DEFAULT_REGIONS),
        deadline=job_deadline(None, time.time())[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then :func:`launch` the job (``--job``: this is one torchrun process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.job is not None:  # one torchrun process
            configure_logging()
            from abmseg.train.engine import run_training

            try:
                run_training(job_from_json(json.loads(args.job.read_text())))
            except TimeLimitStop as stop:  # ends with 0: launch() reads status.json
                if os.environ.get("RANK", "0") == "0":
                    logging.getLogger(__name__).warning("%s", stop)
            return 0
        return launch(job_from_args(args, parser), args.gpus)
    except UserError as error:  # one line, no traceback (a traceback is for bugs)
        print(f"abmseg train: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
