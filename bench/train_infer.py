"""Training throughput and per-patient inference time (DDPM-1000 vs DDIM-50) at a preset.

Training: the real engine (stage 1 and stage 2 of the `full` variant) for one short epoch on
synthetic normalised volumes of the paper's cropped size; slices per second from its losses.csv.
Inference: one batch of each network call is timed, then a patient is extrapolated (CycleGAN once
per batch, the denoiser once per sampler step, MP-FPSN once); a short DDIM run on the same batch
checks the extrapolation. Weights are untrained: speed does not depend on them.

Usage: python bench/train_infer.py [--preset paper] [--size 256] [--train-slices 8]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.infer.predict import InferenceNetworks, InferenceSettings, predict_batch
from abmseg.models.cyclegan import ResnetGenerator
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.presets import load_model_preset
from abmseg.train.engine import TrainJob, run_training
from abmseg.train.settings import TrainSettings

PAPER_SECONDS_PER_EPOCH = 239.8  # Table 1, this method, two RTX A6000


def fake_patient(folder: Path, shape: tuple[int, int, int], seed: int) -> None:
    """Normalised CT/PET/label volumes of a realistic cropped size with an elliptic body."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - y / 2) / (0.45 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 < 1
    ct = np.where(body, rng.uniform(-0.3, 0.3, (z, y, x)), -1.0).astype(np.float32)
    pet = np.where(body, rng.uniform(-0.9, -0.3, (z, y, x)), -1.0).astype(np.float32)
    label = (body & (rng.random((z, y, x)) < 0.05)) * rng.integers(1, 4, (z, y, x))
    folder.mkdir(parents=True)
    for name, array in (("ct", ct), ("pet", pet), ("label", label.astype(np.uint8))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.nii.gz"))


def fake_cohort(work: Path, slices: int) -> list[tuple[str, Path]]:
    """Two fake patients of ``slices`` slices each, as TrainJob takes them."""
    patients = []
    for k in range(2):
        folder = work / f"P{k}"
        fake_patient(folder, (slices, 320, 420), k)
        patients.append((f"P{k}", folder))
    return patients


def one_epoch_settings(preset: str, size: int, batch: int, **training) -> TrainSettings:
    """One epoch per stage at ``preset``, seed 1, plus any other ``training`` keys."""
    return TrainSettings.from_config(
        {
            "seed": 1,
            "model_preset": preset,
            "training": {
                "image_size": size,
                "batch_size": batch,
                "epochs_stage1": 1,
                "epochs_stage2": 1,
                **training,
            },
        }
    )


def train_throughput(args: argparse.Namespace, work: Path) -> dict[str, float]:
    patients = fake_cohort(work, args.slices_per_patient)
    settings = one_epoch_settings(
        args.preset,
        args.size,
        args.train_batch,
        max_slices_per_epoch=args.train_slices,
        workers=args.workers,
    )
    rates = {}
    stage1 = run_training(TrainJob(1, "full", settings, patients, work / "s1"))
    run_training(TrainJob(2, "full", settings, patients, work / "s2", init=stage1))
    for stage in ("s1", "s2"):
        with open(work / stage / "losses.csv") as handle:
            row = list(csv.DictReader(handle))[-1]
        rates[stage] = float(row["slices_per_s"])
    return rates


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(call, reps: int) -> float:
    call()  # warm-up
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        call()
    _sync()
    return (time.perf_counter() - start) / reps


@torch.no_grad()
def inference_times(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = ResnetGenerator.from_preset(load_model_preset("cyclegan", args.preset)).eval().to(device)
    diffusion = ConditionalDiffusion.from_preset(load_model_preset("diffusion", args.preset))
    diffusion = diffusion.eval().to(device)
    seg = MPFPSN.from_preset(load_model_preset("mpfpsn", args.preset)).eval().to(device)
    ct = torch.rand(args.infer_batch, 1, args.size, args.size, device=device) * 2 - 1
    features = diffusion.denoiser.encode_ct(ct)
    t = torch.full((args.infer_batch,), 500, dtype=torch.long, device=device)
    times = {
        "cyclegan": timed(lambda: g(ct), args.reps),
        "ct_encoder": timed(lambda: diffusion.denoiser.encode_ct(ct), args.reps),
        "denoiser_step": timed(lambda: diffusion.predict_eps(ct, t, features), args.reps),
        "mpfpsn": timed(lambda: seg(ct, ct), args.reps),
    }
    networks = InferenceNetworks(mpfpsn=seg, image_size=args.size, g_ct2pet=g, diffusion=diffusion)
    check = InferenceSettings(sampler="ddim", steps=args.check_steps, batch_size=args.infer_batch)
    generator = torch.Generator(device=device).manual_seed(0)
    _sync()
    start = time.perf_counter()
    predict_batch(ct, networks, check, generator)
    _sync()
    times["measured_ddim_batch"] = time.perf_counter() - start
    return times


def per_patient(times: dict[str, float], steps: int, batches: int) -> float:
    per_batch = times["cyclegan"] + times["ct_encoder"] + steps * times["denoiser_step"]
    return batches * (per_batch + times["mpfpsn"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices-per-patient", type=int, default=96)
    parser.add_argument("--train-slices", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--infer-batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--check-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="training loader workers")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; {device}")
    print(f"torch {torch.__version__}, {args.threads} threads, preset {args.preset}, {args.size}px")
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            rates = train_throughput(args, Path(tmp))
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"\ntraining batch {args.train_batch}; peak RSS so far {peak_gb:.1f} GB")
        if torch.cuda.is_available():
            gpu_gb = torch.cuda.max_memory_allocated() / 2**30
            print(f"peak GPU memory allocated by torch: {gpu_gb:.1f} GiB")
        print("\n| training (variant full) | slices / s | epoch of 17,000 slices |")
        print("|---|---|---|")
        for stage, name in (("s1", "stage 1"), ("s2", "stage 2")):
            epoch_h = 17_000 / rates[stage] / 3600
            print(f"| {name} | {rates[stage]:.3f} | {epoch_h:.1f} h |")
        print(f"| paper, two A6000 | - | {PAPER_SECONDS_PER_EPOCH} s |")
    times = inference_times(args)
    batches = math.ceil(args.slices_per_patient / args.infer_batch)
    print(f"\n| inference call, batch {args.infer_batch} | seconds |\n|---|---|")
    for name in ("cyclegan", "ct_encoder", "denoiser_step", "mpfpsn"):
        print(f"| {name} | {times[name]:.3f} |")
    predicted = per_patient(times, args.check_steps, 1)
    print(
        f"| DDIM-{args.check_steps} on one batch: measured {times['measured_ddim_batch']:.2f} s, "
        f"predicted {predicted:.2f} s | |"
    )
    print(f"\n| sampler | per patient ({args.slices_per_patient} slices) |\n|---|---|")
    for name, steps in (("DDIM-50", 50), ("DDPM-1000", 1000)):
        seconds = per_patient(times, steps, batches)
        print(f"| {name} | {seconds:.0f} s ({seconds / 3600:.2f} h) |")


if __name__ == "__main__":
    main()
