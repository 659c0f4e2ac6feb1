"""`abmseg predict` end to end on one paper-sized CT-only patient (512 x 512 x 96 CT, DICOM).

A synthetic patient (abmseg synth, preset paper) and a model bundle of untrained networks at the
chosen model preset (speed does not depend on the weights) are written to a temporary folder;
then the real command runs in a fresh process, as a user would run it, and its wall time is
measured (interpreter start and imports included). On a CPU the paper preset with DDIM-50 takes
about an hour; `--steps` lower than 50 measures the fixed costs, and two step counts give the cost
per sampler step, from which DDIM-50 is extrapolated.

Usage: python bench/predict_ct.py [--model-preset paper] [--image-size 256] [--steps 1 3]
       [--batch 16] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from abmseg.infer.model_bundle import write_model_bundle
from abmseg.models.trained_model import trained_model_content, write_trained_model
from abmseg.synth import generate_cohort
from abmseg.train.networks import Networks, variant_presets
from abmseg.variants import get_variant

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
PREPROCESSING = {
    "crop": {"margin_mm": [10.0, 10.0, 0.0], "clear_outside_body": True},
    "normalise": {"ct_level_hu": 100.0, "ct_width_hu": 1200.0, "suv_ceiling": 10.0},
    "body_threshold": -0.9,
}


def untrained_bundle(folder: Path, model_preset: str, size: int, steps: int, batch: int) -> Path:
    """A `full` variant bundle (CycleGAN generator, diffusion, MP-FPSN) with random weights."""
    presets = variant_presets(get_variant("full"), model_preset, 2)
    torch.manual_seed(0)
    nets = Networks.build(presets)
    settings = {"model_preset": model_preset, "image_size": size}
    model = trained_model_content("full", 2, settings, presets, nets.state(), ["BENCH"], 0, 0, [])
    model_pt = folder / "model.pt"
    write_trained_model(model_pt, model)
    sampler = {"sampler": "ddim", "steps": steps, "start_step": None, "batch_size": batch}
    bundle = folder / f"bundle_ddim{steps}"
    write_model_bundle(
        bundle,
        model_pt,
        preprocessing=PREPROCESSING,
        sampler={**sampler, "seed": 42},
        regions=REGIONS,
        provenance=None,
    )
    return bundle


def run_cli(
    bundle: Path,
    ct: Path,
    out: Path,
    threads: int,
    device: str | None,
    dicom: bool = True,
    sampler: str = "bundle",
) -> dict:
    """One `abmseg predict`; ``sampler`` 'bundle' times the bundle's own steps, 'auto' what a user
    gets by default (on a CPU: one DDIM step from T/4, abmseg.infer.cpu_sampler)."""
    command = [sys.executable, "-m", "abmseg.cli", "predict", "--bundle", str(bundle)]
    command += ["--ct", str(ct), "--out", str(out), "--threads", str(threads)]
    command += ["--sampler", sampler]
    command += ["--device", device] if device else []
    command += [] if dicom else ["--no-dicom"]
    begin = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - begin
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    inside = float(re.search(r"in ([0-9.]+) s on", result.stdout).group(1))
    phases = [line for line in result.stderr.splitlines() if re.search(r" in [0-9.]+ s$", line)]
    chosen = next((line for line in result.stderr.splitlines() if "sampler:" in line), "")
    return {"wall_s": wall, "command_s": inside, "phases": phases, "sampler": chosen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-preset", default="paper")
    parser.add_argument("--ct-preset", default="paper")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256, help="slice size of the networks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--default-run",
        action="store_true",
        help="also run a DDIM-50 bundle with the command's default sampler choice",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        begin = time.perf_counter()
        generate_cohort(work / "raw", n_patients=1, seed=0, preset=args.ct_preset)
        print(f"synthetic patient written in {time.perf_counter() - begin:.1f} s", flush=True)
        ct = work / "raw" / "SYN001" / "CT"
        results = {}
        for steps in args.steps:
            bundle = untrained_bundle(work, args.model_preset, args.image_size, steps, args.batch)
            results[steps] = run_cli(bundle, ct, work / f"out{steps}", args.threads, args.device)
            print(f"DDIM-{steps}: {results[steps]}", flush=True)
        plain = run_cli(bundle, ct, work / "plain", args.threads, args.device, dicom=False)
        print(f"DDIM-{steps} without DICOM export: {plain}", flush=True)
        default = None
        if args.default_run:
            ddim50 = untrained_bundle(work, args.model_preset, args.image_size, 50, args.batch)
            default = run_cli(ddim50, ct, work / "auto", args.threads, args.device, sampler="auto")
            print(f"DDIM-50 bundle, the command's default sampler: {default}", flush=True)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    print(
        f"\nmachine: {platform.node()} {os.cpu_count()} cores, {card}; torch {torch.__version__}; "
        f"model preset {args.model_preset}, CT preset {args.ct_preset}, batch {args.batch}, "
        f"threads {args.threads}"
    )
    print("| DDIM steps | `abmseg predict` wall (s) | inside the command (s) |")
    print("|---|---|---|")
    for steps, r in results.items():
        print(f"| {steps} | {r['wall_s']:.1f} | {r['command_s']:.1f} |")
    print(f"| {steps}, `--no-dicom` | {plain['wall_s']:.1f} | {plain['command_s']:.1f} |")
    if default is not None:
        print(f"| DDIM-50 bundle, default `--sampler auto` | {default['wall_s']:.1f} | "
              f"{default['command_s']:.1f} |\n{default['sampler']}")  # fmt: skip
    if len(results) >= 2 and 50 not in results:
        (s0, r0), (s1, r1) = sorted(results.items())[:2]
        per_step = (r1["command_s"] - r0["command_s"]) / (s1 - s0)
        at_50 = r0["wall_s"] + per_step * (50 - s0)
        print(f"| 50 (extrapolated: {per_step:.1f} s per step) | {at_50:.0f} | - |")


if __name__ == "__main__":
    main()
