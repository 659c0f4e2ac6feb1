"""Where one training step's time goes, at a preset: data wait, step, top operators, FLOP use.

The real Trainer (stage 1 or 2 of the `full` variant) on synthetic volumes of the paper's cropped
size. After warm-up steps, each step is timed in two parts with the device synchronised: waiting
for the loader's next batch, and the rest (copy to the device, augmentation when it runs there,
forward, backward, optimizer). torch.profiler then records a few steps; its operator table shows
what the step is made of. FLOPs per slice come from torch.utils.flop_counter over one whole step
(forward and backward), so model FLOP utilisation = FLOPs/slice x slices/s / the card's peak.

Usage: python bench/train_step_profile.py [--stage 1|2] [--preset paper] [--size 256]
       [--batch 8] [--steps 20] [--workers 4] [--augment-on-device] [--channels-last]
       [--fused-adam] [--peak-tflops 989] [--loss-curve 200 --curve-out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode
from train_infer import fake_cohort, one_epoch_settings

from abmseg.models.diffusion.losses import frozen_feature_extractor
from abmseg.train.augment import augment_batch
from abmseg.train.distributed import init_distributed
from abmseg.train.engine import Trainer, TrainJob, run_training
from abmseg.train.settings import TrainSettings


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_trainer(args: argparse.Namespace, work: Path) -> Trainer:
    patients = fake_cohort(work, 48)
    settings = one_epoch_settings(
        args.preset,
        args.size,
        args.batch,
        workers=args.workers,
        augment_on_device=args.augment_on_device,
    )
    init = None
    if args.stage == 2:  # stage 2 starts from a stage-1 model: one tiny stage-1 run makes it
        brief = TrainSettings.from_dict({**settings.to_dict(), "max_slices_per_epoch": args.batch})
        init = run_training(TrainJob(1, "full", brief, patients, work / "s1"))
    job = TrainJob(args.stage, "full", settings, patients, work / f"profile{args.stage}", init=init)
    return Trainer(job, init_distributed(job.backend, job.device))


def endless(trainer: Trainer):
    """The loader's batches, epoch after epoch (a profile may need more than one epoch has)."""
    epoch = 0
    while True:
        trainer.loader.sampler.set_epoch(epoch)
        yield from trainer.loader
        epoch += 1


def apply_candidates(trainer: Trainer, args: argparse.Namespace) -> None:
    """Candidate speed-ups not (yet) in the engine, tried here first: channels_last weights and
    fused Adam (same hyper-parameters; the engine's StepModules share the optimizer dict)."""
    if args.channels_last:
        for module in trainer.nets.parts().values():
            module.to(memory_format=torch.channels_last)
    if args.fused_adam:
        for name, old in list(trainer.optimizers.items()):
            params = [p for group in old.param_groups for p in group["params"]]
            group = old.param_groups[0]
            trainer.optimizers[name] = torch.optim.Adam(
                params,
                lr=group["lr"],
                betas=group["betas"],
                weight_decay=group["weight_decay"],
                fused=True,
            )


def one_step(trainer: Trainer, batch: dict, channels_last: bool = False) -> dict:
    device, s = trainer.env.device, trainer.settings
    layout = torch.channels_last if channels_last else torch.contiguous_format
    ct = batch["ct"].to(device, non_blocking=True).to(memory_format=layout)
    pet = batch["pet"].to(device, non_blocking=True).to(memory_format=layout)
    label = batch["label"].to(device, non_blocking=True)
    if "augment" in batch:
        ct, pet, label = augment_batch(ct, pet, label, batch["augment"], s.augment)
    return trainer.step_fn(trainer.modules, ct, pet, label)


def loss_curve(trainer: Trainer, batches, steps: int, channels_last: bool, out: Path) -> None:
    """Every loss term of ``steps`` steps from the start (fixed seed), one CSV row a step: run
    once without and once with a candidate, the curves must agree within bf16 tolerance."""
    rows = []
    for step in range(steps):
        terms = one_step(trainer, next(batches), channels_last)
        rows.append({"step": step, **{k: float(v) for k, v in terms.items()}})
    names = list(rows[0])
    lines = [",".join(names)] + [",".join(f"{row[n]}" for n in names) for row in rows]
    out.write_text("\n".join(lines) + "\n")
    print(f"{steps} steps of losses written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--augment-on-device", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fused-adam", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    parser.add_argument(
        "--loss-curve", type=int, default=0, help="instead of timing: N steps' losses to a CSV"
    )
    parser.add_argument("--curve-out", type=Path, default=Path("losses.csv"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(args, Path(tmp))
        device = trainer.env.device
        apply_candidates(trainer, args)
        nets = trainer.nets
        if args.stage == 2 and nets.diffusion.loss_config.perceptual_network == "cyclegan":
            # as Trainer._run_epoch does: the perceptual loss reads the frozen G_PET->CT
            trainer.modules.feature_fn = frozen_feature_extractor(nets.cyclegan.g_pet2ct)
        nets.train(True)  # the step functions enter bf16 autocast themselves (StepModules)
        batches = endless(trainer)
        if args.loss_curve:
            loss_curve(trainer, batches, args.loss_curve, args.channels_last, args.curve_out)
            return
        waits, steps = [], []
        for index in range(args.warmup + args.steps):
            begin = time.perf_counter()
            batch = next(batches)
            fetched = time.perf_counter()
            one_step(trainer, batch, args.channels_last)
            sync(device)
            if index >= args.warmup:
                waits.append(fetched - begin)
                steps.append(time.perf_counter() - fetched)
        with FlopCounterMode(display=False) as counter:
            one_step(trainer, next(batches), args.channels_last)
        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with profile(activities=activities) as prof:
            for _ in range(3):
                one_step(trainer, next(batches), args.channels_last)
            sync(device)
    per_step = statistics.median(w + s for w, s in zip(waits, steps, strict=True))
    rate = args.batch / per_step
    flops_per_slice = counter.get_total_flops() / args.batch
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {card}; torch {torch.__version__}")
    print(
        f"stage {args.stage}, preset {args.preset}, {args.size} px, batch {args.batch}, "
        f"workers {args.workers}, augment on device {args.augment_on_device}, channels_last "
        f"{args.channels_last}, fused Adam {args.fused_adam}"
    )
    print(
        f"median per step: {per_step * 1e3:.1f} ms = data wait "
        f"{statistics.median(waits) * 1e3:.1f} ms + step {statistics.median(steps) * 1e3:.1f} ms; "
        f"{rate:.1f} slices/s"
    )
    print(
        f"FLOPs per slice (forward + backward): {flops_per_slice / 1e9:.1f} GFLOP; model FLOP "
        f"utilisation {flops_per_slice * rate / (args.peak_tflops * 1e12) * 100:.1f} % of "
        f"{args.peak_tflops:.0f} TFLOPS"
    )
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20))


if __name__ == "__main__":
    main()
