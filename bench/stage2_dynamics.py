"""Stage-2 dynamics of the full model (docs/validation.md, risk 4), after `make study`.

Trains the full variant's stage 2 again from the study's own stage 1, once per experiment, on the
study's training patients with the study's settings and one change each:

- ``seed``: another training seed, nothing else changed (how far two equal runs differ);
- ``diffusion_lr_0.1``: the diffusion's learning rate a tenth of the others' (the paper's
  schedule starts the new diffusion at 1e-5 while stage 1 trained at 1e-4);
- ``warmup_4``: MP-FPSN reads the pseudo-PET for the first 4 stage-2 epochs;
- ``detached``: the segmentation loss no longer trains the denoiser.

Then each model is scored on the test patients with the study's inference and paired against the
study's full model (bench/study_models.py). These are measurements beside the pre-registered study,
not a tuning: no setting of config/study.yaml is chosen from them.

Usage (in the folder holding results/, after `make study`):
    python bench/stage2_dynamics.py --config config/study.yaml [--parallel 2] [--only seed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from study_models import merged_config, score_models, split_patients  # bench/ is on sys.path

EXPERIMENTS = {
    "seed": {"seed": "+1"},
    "diffusion_lr_0.1": {"training.diffusion_lr_scale": 0.1},
    "warmup_4": {"training.spet_warmup_epochs": 4},
    "detached": {"training.seg_grad_into_denoiser": False},
}


def experiment_config(config: dict, changes: dict) -> dict:
    """``config`` with one experiment's changes (``"+1"`` adds one to the seed)."""
    out = json.loads(json.dumps(config))
    for key, value in changes.items():
        if key == "seed":
            out["seed"] = int(out["seed"]) + 1
            continue
        section, leaf = key.split(".")
        out[section][leaf] = value
    return out


def training_patients_tsv(results: Path, out: Path) -> Path:
    train = split_patients(results, "train")  # sorted, as scripts/train.py passes them
    folders = {p: (results / "normalized" / p).resolve() for p in train}
    lines = ["patient_id\tfolder", *(f"{p}\t{folder}" for p, folder in folders.items())]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def train_command(
    variant: str, stage: int, config: Path, patients: Path, out: Path, init: Path | None
) -> list[str]:
    """``abmseg train`` of one stage on the CPU (the CLI the workflow's rules also drive)."""
    command = [
        sys.executable, "-m", "abmseg.train.cli", "--stage", str(stage), "--variant", variant,
        "--config", str(config), "--patients", str(patients), "--out", str(out), "--gpus", "0",
    ]  # fmt: skip
    return command + (["--init", str(init)] if init else [])


def run_chains(chains: dict[str, list[list[str]]], logs: Path, parallel: int) -> dict[str, float]:
    """Run each named chain of commands in order, ``parallel`` chains at once, one thread each;
    the seconds each chain took. A failed command stops everything, naming its log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, seconds = list(chains), {}, {}

    def start(name: str, index: int, began: float) -> None:
        with (logs / f"{name}.{index}.log").open("w") as log:  # the child keeps its own handle
            process = subprocess.Popen(chains[name][index], env=env, stdout=log, stderr=log)
        running[name] = (process, index, began)

    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            start(name, 0, time.time())
        time.sleep(5)
        for name, (process, index, began) in list(running.items()):
            if process.poll() is None:
                continue
            if process.returncode:
                for other, *_ in running.values():  # no orphan keeps the cores busy
                    other.terminate()
                    other.wait()
                sys.exit(f"{name} failed: see {logs / f'{name}.{index}.log'}")
            del running[name]
            if index + 1 < len(chains[name]):
                start(name, index + 1, began)
            else:
                seconds[name] = time.time() - began
                print(f"{name}: done after {seconds[name]:.0f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("results/study/stage2_dynamics"))
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once (1 thread each)")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS))
    args = parser.parse_args()
    config = merged_config(args.config)
    patients = training_patients_tsv(args.results, args.out / "train_patients.tsv")
    init = args.results / "models" / "full" / "stage1" / "model.pt"
    names = args.only or list(EXPERIMENTS)
    chains = {}
    for name in names:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        cfg = folder / "config.json"
        cfg.write_text(json.dumps(experiment_config(config, EXPERIMENTS[name]), indent=1))
        chains[name] = [train_command("full", 2, cfg, patients, folder, init)]
    seconds = run_chains(chains, args.out, args.parallel)
    models = {name: args.out / name / "model.pt" for name in names}
    lines, _ = score_models(config, models, args.results, threads=args.parallel)
    print("\n" + "\n".join(lines))
    print("\ntraining seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
