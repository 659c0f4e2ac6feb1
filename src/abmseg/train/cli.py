"""``abmseg train`` / ``python -m abmseg.train.cli``: train one stage of one variant.

    python -m abmseg.train.cli --stage 1 --variant full --config config.json \\
        --patients train.tsv --out results/train/full/stage1 [--gpus 2]
    python -m abmseg.train.cli --stage 2 --variant full ... --init results/.../stage1/model.pt

``--config`` is the workflow's whole config dict (JSON, or YAML); ``--patients`` a TSV with
columns ``patient_id`` and ``folder`` (the normalised ct/pet/label.nii.gz). With ``--gpus N``
> 1 outside torchrun the command runs
``python -m torch.distributed.run --standalone --nproc_per_node N -m abmseg.train.cli ...``
as a child (one process per GPU; on a CPU-only machine N gloo processes), forwards SIGTERM/SIGINT
to it and returns its exit status. Rerunning the same command after a crash resumes from
``OUT/checkpoints``. Messages go through ``logging`` (configured to stderr at INFO unless the
caller, e.g. a Snakemake rule script, configured logging already).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from abmseg.train.distributed import BACKENDS, launched_by_torchrun
from abmseg.train.variants import VARIANTS

TORCHRUN_MODULE = "torch.distributed.run"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abmseg train", description="Train one stage of one ablation variant (resumable)."
    )
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--variant", choices=list(VARIANTS), required=True)
    parser.add_argument("--config", type=Path, required=True, help="whole config (JSON or YAML)")
    parser.add_argument(
        "--patients", type=Path, required=True, help="TSV: patient_id, folder (normalised images)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--init", type=Path, help="stage 2: the stage-1 model.pt")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="processes (one per GPU); 0 = CPU only; > 1 launches torchrun (default 1)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="DDP backend (default: nccl on GPU)")
    return parser


def read_config(path: Path) -> dict[str, Any]:
    """The config dict from JSON (``.json``) or YAML."""
    text = Path(path).read_text()
    config = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of config sections")
    return config


def read_patients(path: Path) -> list[tuple[str, Path]]:
    """(patient_id, folder) rows; relative folders resolve against the sheet's folder, falling
    back to the working directory when only that one exists."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"patient_id", "folder"} <= set(rows[0]):
        raise ValueError(f"{path}: needs a header with columns patient_id and folder, and rows")
    patients = []
    for row in rows:
        folder = Path(row["folder"])
        if not folder.is_absolute():
            beside = path.parent / folder
            folder = beside if beside.exists() or not folder.exists() else folder
        patients.append((row["patient_id"], folder))
    return patients


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, relaunch under torchrun when ``--gpus`` > 1, else train in this process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.stage == 2 and args.init is None:
        raise SystemExit("abmseg train: stage 2 needs --init STAGE1/model.pt")
    if args.gpus > 1 and not launched_by_torchrun():
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < args.gpus:
            raise SystemExit(
                f"abmseg train: --gpus {args.gpus} but only {torch.cuda.device_count()} visible"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        return run_forwarding_signals(torchrun_command(args.gpus, argv))

    configure_logging()
    from abmseg.train.engine import TrainJob, run_training
    from abmseg.train.settings import TrainSettings

    job = TrainJob(
        stage=args.stage,
        variant=args.variant,
        settings=TrainSettings.from_config(read_config(args.config)),
        patients=read_patients(args.patients),
        out=args.out,
        init=args.init,
        device="cpu" if args.gpus == 0 else None,
        backend=args.backend,
    )
    run_training(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
