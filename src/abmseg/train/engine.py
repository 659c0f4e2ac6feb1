"""Training engine: the epoch loop of either stage, resumable checkpoints and the stage's outputs.

Per-batch steps live in :mod:`abmseg.train.stage1` and :mod:`abmseg.train.stage2` (optimizers
and the stage-2 sPET estimate are documented there). This module owns what is common:

* Data: the training patients' body slices (``SliceDataset`` with augmentation), shuffled by
  patient blocks; under DDP each rank takes its shard. ``max_slices_per_epoch`` caps an epoch
  at that many slices over all ranks, taken from the front of the epoch's shuffled order.
* Learning rate: MultiStepLR on GLOBAL epochs (stage 1 counts 0..E1-1, stage 2 E1..E1+E2-1),
  written into every optimizer at the start of each epoch from the global epoch number, so a
  resumed run and stage 2 continue the schedule instead of restarting it.
* Randomness: every epoch reseeds Python, numpy and torch from (seed, rank, global epoch); data
  order and augmentation depend on (seed, epoch) only; image pools carry their own generators,
  saved per rank. Hence a run killed at any moment and resumed from its last checkpoint ends with
  bit-identical weights on the CPU (GPU kernels are not bitwise deterministic). The checkpoint
  also keeps ``capture_rng_state()`` of rank 0, restored on resume, but correctness does not
  depend on it (the per-epoch reseed makes every rank's stream reproducible without gathering).
* Checkpoints: at the end of every epoch rank 0 saves networks, optimizers, the global epoch
  (scheduler position), image pools of every rank, RNG state, settings, variant, stage and the
  loss history into ``OUT/checkpoints`` (``last.pt``/``previous.pt``, atomic). A run starts from
  the newest loadable checkpoint (a damaged ``last.pt`` falls back to ``previous.pt``), and
  refuses one made with other settings.
* Stage 2 starts from the stage-1 trained model (``--init``): every stage-1 network's weights. The
  optimizer states (generators + MP-FPSN, discriminators) and image pools come from the stage-1
  run's final checkpoint beside it (``<init folder>/checkpoints``) when it is there and
  belongs to that model; otherwise those Adams start fresh (said on stderr). The diffusion and
  its Adam are new.
* Validation: with validation patients (``TrainJob.validation``) every epoch ends with their
  scores (:mod:`abmseg.train.validation`), added to the epoch's row of ``losses.csv``.
* Time limit: with a deadline (``TrainJob.deadline``) the run stops between epochs when the next
  one would not finish in time, and logs a SIGTERM before dying of it
  (:mod:`abmseg.train.time_limit`); either way the resubmitted job resumes from the checkpoint.
* Outputs (rank 0): ``OUT/model.pt`` (the trained model, atomic), ``losses.csv`` (every epoch),
  ``losses.png`` (at the end), TensorBoard scalars when installed, ``status.json``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from abmseg.errors import ConfigError, DivergedError
from abmseg.models.cyclegan_losses import CycleGANLoss
from abmseg.models.diffusion.losses import frozen_feature_extractor
from abmseg.models.seg_losses import SegmentationLoss
from abmseg.models.trained_model import (
    load_trained_model,
    read_trained_model,
    trained_model_content,
    write_trained_model,
)
from abmseg.progress import ProgressLine
from abmseg.regions import DEFAULT_REGIONS
from abmseg.train.augment import augment_batch, derive_seed
from abmseg.train.checkpoint import (
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from abmseg.train.distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    wrap,
)
from abmseg.train.networks import CYCLEGAN_PARTS, Networks, variant_presets
from abmseg.train.progress import TensorBoardLog, plot_losses, write_losses_csv, write_status
from abmseg.train.settings import TrainSettings, resume_differences
from abmseg.train.slices import SliceDataset, SliceIndex, make_loader
from abmseg.train.stage1 import CycleGANView, StepModules, stage1_step
from abmseg.train.stage2 import stage2_step
from abmseg.train.time_limit import (
    TIME_LIMIT_PHASE,
    TimeLimitStop,
    current_deadline,
    should_stop,
    stop_on_sigterm,
)
from abmseg.train.validation import Validator
from abmseg.variants import get_variant, has_stage2, stage1_owner

CHECKPOINT_FORMAT = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """One stage of one variant: what to train, on which patients, into which folder."""

    stage: int
    variant: str
    settings: TrainSettings
    patients: Sequence[tuple[str, str | Path]]  # (patient_id, normalised folder)
    out: Path
    init: Path | None = None  # stage 2: the stage-1 trained model (model.pt)
    device: str | None = None  # None: this rank's GPU if there is one, else the CPU
    backend: str | None = None  # DDP backend; None: nccl on GPU, gloo on CPU
    # Training-side patients scored after every epoch, never fitted on.
    validation: Sequence[tuple[str, str | Path]] = ()
    regions: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    deadline: float | None = None  # epoch seconds by which this job must have stopped

    def __post_init__(self) -> None:
        get_variant(self.variant)  # refuses an unknown name
        both = {p for p, _ in self.patients} & {p for p, _ in self.validation}
        if both:
            raise ValueError(f"patients {sorted(both)} are both fitted on and validated on")
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.stage == 2 and not has_stage2(self.variant, self.settings.equal_budget):
            raise ValueError(
                f"variant {self.variant!r} has no stage 2 (it uses no diffusion; set "
                "training.equal_budget to train it on through stage 2's epochs)"
            )
        if self.stage == 2 and self.init is None:
            raise ValueError("stage 2 starts from the stage-1 trained model: pass init (--init)")


def run_training(job: TrainJob) -> Path:
    """Train one stage (resuming from ``job.out/checkpoints``); returns ``job.out/model.pt``.

    Joins the torchrun process group when launched by torchrun, else runs in this process.
    """
    env = init_distributed(job.backend, job.device)
    try:
        result = Trainer(job, env).fit()
    except BaseException:
        if env.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    cleanup(env)
    return result


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (all devices) from one 64-bit seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _say(env: DistEnv, message: str) -> None:
    """Log on rank 0 only (every rank would repeat the same line)."""
    if env.is_main:
        log.info("%s", message)


def _autocast(device: torch.device, bf16: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA when asked for; full precision everywhere else."""
    if device.type == "cuda" and bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class Trainer:
    """State of one stage run: networks, optimizers, data, history; ``fit`` runs the epochs."""

    def __init__(self, job: TrainJob, env: DistEnv) -> None:
        self.job, self.env = job, env
        self.settings = s = job.settings
        self.spec = get_variant(job.variant)
        self.stage = job.stage
        self.out = Path(job.out)
        self.checkpoints = self.out / "checkpoints"
        self.epochs = s.epochs(job.stage)
        self.offset = s.epoch_offset(job.stage)
        self.history: list[dict[str, Any]] = []
        self.previous_history: list[dict[str, Any]] = []  # earlier stages (from the init model)
        self.start_epoch = 0
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels

        self.presets = variant_presets(self.spec, s.model_preset, job.stage)
        seed_everything(derive_seed(s.seed, job.stage))  # same initial weights on every rank
        self.nets = Networks.build(self.presets).to(env.device)
        self.gan_loss = None
        if self.spec.uses_cyclegan:
            pool_seed = derive_seed(s.seed, env.rank, 1) % 2**62
            self.gan_loss = CycleGANLoss.from_preset(self.presets["cyclegan"], seed=pool_seed)
        self.optimizers = self._make_optimizers()

        checkpoint = load_latest_checkpoint(self.checkpoints, map_location="cpu")
        if checkpoint is not None:
            self._resume(checkpoint)
        elif job.stage == 2:
            self._init_from_stage1(Path(job.init))  # type: ignore[arg-type]
        barrier(env)  # every rank has read the checkpoint before rank 0 may replace it
        self.modules = self._step_modules()
        # Stage 2 of a variant without the diffusion (equal_budget) keeps stage 1's step.
        self.step_fn = stage2_step if self.nets.diffusion is not None else stage1_step
        self.loader, self.batches = self._make_loader()
        self.validator = None
        if job.validation:
            self.validator = Validator(
                job.validation, job.regions, s.image_size, s.batch_size, s.body_threshold, env
            )
        self.slowest_epoch: float | None = None  # wall seconds, epochs of this process
        self.current_epoch = self.start_epoch

    # ------------------------------------------------------------------ construction

    def _adam(self, params: list[torch.nn.Parameter]) -> torch.optim.Adam:
        s = self.settings
        return torch.optim.Adam(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """gen: generators + MP-FPSN; disc: discriminators; diff: the denoiser (stage 2)."""
        nets = self.nets
        gen = []
        if nets.cyclegan is not None:
            gen += [*nets.cyclegan.g_ct2pet.parameters(), *nets.cyclegan.g_pet2ct.parameters()]
        gen += list(nets.mpfpsn.parameters())
        optimizers = {"gen": self._adam(gen)}
        if nets.cyclegan is not None:
            disc = [*nets.cyclegan.d_pet.parameters(), *nets.cyclegan.d_ct.parameters()]
            optimizers["disc"] = self._adam(disc)
        if nets.diffusion is not None:
            optimizers["diff"] = self._adam(list(nets.diffusion.parameters()))
        return optimizers

    def _step_modules(self) -> StepModules:
        """DDP-wrap every trained network (after loading weights) and bundle what steps use."""
        env, nets = self.env, self.nets
        m = StepModules(
            spec=self.spec,
            nets=nets,
            mpfpsn=wrap(nets.mpfpsn, env),
            seg_loss=SegmentationLoss(),
            optimizers=self.optimizers,
            autocast=_autocast(env.device, self.settings.bf16),
            gan_loss=self.gan_loss,
            spet_t_fraction=self.settings.spet_t_fraction,
            seg_grad_into_denoiser=self.settings.seg_grad_into_denoiser,
        )
        if nets.cyclegan is not None:
            plain = [getattr(nets.cyclegan, name) for name in CYCLEGAN_PARTS]
            wrapped = [wrap(module, env) for module in plain]
            m.g_view = CycleGANView(wrapped[0], wrapped[1], plain[2], plain[3])
            m.d_view = CycleGANView(plain[0], plain[1], wrapped[2], wrapped[3])
        if nets.diffusion is not None:
            m.diffusion = wrap(nets.diffusion, env)
        return m

    def _make_loader(self) -> tuple[torch.utils.data.DataLoader, int]:
        s, env = self.settings, self.env
        index = SliceIndex(
            self.job.patients, s.body_threshold, cache_size=max(s.patients_per_block, 4)
        )
        dataset = SliceDataset(
            index,
            s.image_size,
            augment=True,
            settings=s.augment,
            base_seed=s.seed,
            defer_augment=s.augment_on_device,
        )
        loader = make_loader(
            dataset,
            batch_size=s.batch_size,
            shuffle=True,
            seed=s.seed,
            workers=s.workers,
            distributed=env.distributed,
            rank=env.rank,
            world_size=env.world_size,
            pin_memory=env.device.type == "cuda",
            patients_per_block=s.patients_per_block,
        )
        batches = len(loader)
        if batches == 0:
            raise ConfigError(
                f"{len(dataset)} training slices give no full batch of {s.batch_size} per rank "
                f"on {env.world_size} rank(s)",
                "add training patients or lower batch_size",
            )
        if s.max_slices_per_epoch is not None:
            cap = s.max_slices_per_epoch // (s.batch_size * env.world_size)
            batches = min(batches, max(cap, 1))
        self.train_patients = index.patients
        return loader, batches

    # ------------------------------------------------------------------ restoring state

    def _check_compatible(self, saved: dict[str, Any], what: str, fix: str) -> None:
        problems = []
        if saved.get("variant") != self.job.variant:
            problems.append(f"variant {saved.get('variant')!r} != {self.job.variant!r}")
        if saved.get("stage") != self.stage:
            problems.append(f"stage {saved.get('stage')} != {self.stage}")
        problems += resume_differences(saved.get("settings", {}), self.settings)
        if problems:
            raise ConfigError(f"{what} does not match this run ({'; '.join(problems)})", fix)

    def _resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue after the checkpoint's epoch with its weights, optimizers, pools, history."""
        self._check_compatible(
            checkpoint,
            f"checkpoint in {self.checkpoints}",
            f"delete {self.checkpoints} to retrain from scratch, or use another output folder",
        )
        self.nets.load_state(checkpoint["networks"])
        self._load_optimizers(checkpoint["optimizers"], tuple(self.optimizers))
        self._load_pools(checkpoint.get("pools"))
        restore_rng_state(checkpoint["rng"])
        self.history = list(checkpoint["history"])
        self.previous_history = list(checkpoint.get("previous_history", []))
        self.start_epoch = int(checkpoint["epoch"]) + 1
        _say(
            self.env,
            f"resuming stage {self.stage} of {self.job.variant} after epoch "
            f"{self.start_epoch}/{self.epochs} (global {checkpoint['global_epoch']})",
        )

    def _load_optimizers(self, states: dict[str, Any], names: tuple[str, ...]) -> None:
        for name in names:
            self.optimizers[name].load_state_dict(states[name])

    def _load_pools(self, pools: list[dict] | None) -> None:
        """This rank's image pools (rank r of a run with fewer ranks takes r modulo that)."""
        if not pools or self.gan_loss is None:
            return
        mine = pools[self.env.rank % len(pools)]
        self.gan_loss.pool_pet.load_state_dict(mine["pet"])
        self.gan_loss.pool_ct.load_state_dict(mine["ct"])

    def _init_from_stage1(self, init: Path) -> None:
        """Stage-1 weights (model.pt); optimizers and pools from its run's last checkpoint."""
        stage1 = read_trained_model(init)
        s = self.settings
        # cyclegan and diffusion share one stage 1 (variants.stage1_owner).
        expected = {
            "variant": stage1_owner(self.job.variant),
            "stage": 1,
            "model_preset": s.model_preset,
            "image_size": s.image_size,
            "global_epochs": s.epochs_stage1,
        }
        wrong = [
            f"{k} {stage1.get(k)!r} != {v!r}" for k, v in expected.items() if stage1.get(k) != v
        ]
        if wrong:
            raise ConfigError(
                f"{init} is not the stage-1 model of this run ({'; '.join(wrong)})",
                f"train stage 1 of {stage1_owner(self.job.variant)!r} with the same training "
                "settings first",
            )
        stage1_parts = (*CYCLEGAN_PARTS, "mpfpsn")
        self.nets.load_state(stage1["state"], only=stage1_parts)
        self.previous_history = list(stage1.get("history", []))
        source = "fresh Adam states (no matching stage-1 checkpoint beside the model)"
        try:
            run = load_latest_checkpoint(init.parent / "checkpoints", map_location="cpu")
        except Exception as exc:  # a damaged stage-1 checkpoint only costs the optimizer state
            run, source = None, f"fresh Adam states (stage-1 checkpoint unreadable: {exc})"
        if (
            run is not None
            and run.get("variant") == stage1_owner(self.job.variant)
            and run.get("stage") == 1
            and run.get("global_epoch") == stage1["global_epochs"] - 1
        ):
            stage1_optimizers = tuple(n for n in ("gen", "disc") if n in self.optimizers)
            self._load_optimizers(run["optimizers"], stage1_optimizers)
            self._load_pools(run.get("pools"))
            source = f"optimizer states and image pools of {init.parent / 'checkpoints'}"
        _say(self.env, f"stage 2 of {self.job.variant}: networks from {init}; {source}")

    # ------------------------------------------------------------------ epochs

    def fit(self) -> Path:
        """Run the remaining epochs, then write the trained model and the loss files (rank 0)."""
        board = TensorBoardLog(self.out / "tensorboard", enabled=self.env.is_main)
        try:
            with stop_on_sigterm(self._sigterm_message):
                for epoch in range(self.start_epoch, self.epochs):
                    self.current_epoch = epoch
                    self._stop_if_out_of_time(epoch)
                    started = time.perf_counter()
                    row = self._run_epoch(epoch)
                    if self.validator is not None:
                        row.update(self._validate(row["global_epoch"]))
                    self.history.append(row)
                    self._save(epoch, row)
                    board.add_row(row)
                    took = time.perf_counter() - started
                    self.slowest_epoch = max(self.slowest_epoch or 0.0, took)
        finally:
            board.close()
        model = self.out / "model.pt"
        if self.env.is_main:
            self._write_outputs(model)
        return model

    def _validate(self, global_epoch: int) -> dict[str, Any]:
        assert self.validator is not None
        scores = self.validator.score(self.modules, self.settings.seed, global_epoch)
        _say(
            self.env,
            f"[stage {self.stage} {self.job.variant}] validation: segmentation loss "
            f"{scores['val_seg_total']:.4g}, mean Dice {scores['val_dice_mean']:.3f} on "
            f"{len(self.validator.patients)} patient(s) in {scores['validation_seconds']:.1f}s",
        )
        return scores

    def _epoch_estimate(self) -> float | None:
        """Wall seconds the next epoch may take: the slowest of this process, else the last
        finished one's training and validation time (a resumed job's first epoch)."""
        if self.slowest_epoch is not None:
            return self.slowest_epoch
        if self.history:
            last = self.history[-1]
            return float(last.get("seconds", 0.0)) + float(last.get("validation_seconds", 0.0))
        return None

    def _stop_if_out_of_time(self, epoch: int) -> None:
        """Stop (every rank together) before an epoch that would end after the deadline: rank 0
        asks SLURM for it afresh and every rank takes rank 0's."""
        if self.job.deadline is None:
            return
        env = self.env
        mine = current_deadline(self.job.deadline) if env.is_main else 0.0
        shared = torch.tensor([mine], dtype=torch.float64, device=env.device)
        deadline = float(all_reduce_sum(shared, env)[0])
        estimate = self._epoch_estimate()
        stop = torch.tensor(
            [float(should_stop(time.time(), deadline, estimate))], device=env.device
        )
        if float(all_reduce_sum(stop, env)[0]) == 0:
            return
        left = max(deadline - time.time(), 0.0)
        where = f"stage {self.stage} of {self.job.variant}"
        if self.slowest_epoch is None:  # not one epoch in this job: stopping would only loop
            raise ConfigError(
                f"{where}: an epoch takes about {estimate:.0f} s but this job has only "
                f"{left:.0f} s left before its time limit, so it cannot finish one",
                f"raise resources.train_stage{self.stage}.runtime (minutes) or lower "
                "training.max_slices_per_epoch",
            )
        self._status(epoch=epoch - 1, global_epoch=self.offset + epoch - 1, phase=TIME_LIMIT_PHASE)
        raise TimeLimitStop(
            f"{where} stopped before its time limit after epoch {epoch}/{self.epochs} (the "
            f"next would take about {estimate:.0f} s, {left:.0f} s are left); its checkpoint "
            "is saved and a resubmitted job (rule retries, config cluster.train_retries) "
            f"resumes with epoch {epoch + 1}"
        )

    def _sigterm_message(self) -> str:
        return (
            f"stage {self.stage} of {self.job.variant} terminated during epoch "
            f"{self.current_epoch + 1}/{self.epochs}; the checkpoint of the epochs before stays "
            f"and a resubmitted job resumes with epoch {self.current_epoch + 1}"
        )

    def _status(self, **fields: Any) -> None:
        if self.env.is_main:
            write_status(
                self.out / "status.json",
                variant=self.job.variant,
                stage=self.stage,
                epochs=self.epochs,
                **fields,
            )

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        s, env, m = self.settings, self.env, self.modules
        global_epoch = self.offset + epoch
        self._status(epoch=epoch, global_epoch=global_epoch, phase="training")
        seed_everything(derive_seed(s.seed, env.rank, global_epoch))
        lr = s.lr_at(global_epoch)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = s.optimizer_lr(name, global_epoch)
        m.spet_warmup = self.stage == 2 and epoch < s.spet_warmup_epochs
        if self.stage == 2 and self.nets.cyclegan is not None:
            diffusion = self.nets.diffusion
            if diffusion is not None and diffusion.loss_config.perceptual_network == "cyclegan":
                m.feature_fn = frozen_feature_extractor(self.nets.cyclegan.g_pet2ct)
        self.nets.train(True)
        self.loader.sampler.set_epoch(global_epoch)

        label = f"[stage {self.stage} {self.job.variant}] epoch {epoch + 1}/{self.epochs}"
        progress = ProgressLine(label, self.batches, enabled=env.is_main)
        sums: dict[str, Tensor] = {}
        seen: list[tuple[str, int]] = []
        start = time.perf_counter()
        steps = 0
        device = env.device
        for step, batch in enumerate(self.loader):
            if step >= self.batches:
                break
            ct = batch["ct"].to(device, non_blocking=True)
            pet = batch["pet"].to(device, non_blocking=True)
            target = batch["label"].to(device, non_blocking=True)
            if "augment" in batch:
                ct, pet, target = augment_batch(ct, pet, target, batch["augment"], s.augment)
            terms = self.step_fn(m, ct, pet, target)
            for key, value in terms.items():
                sums[key] = sums[key] + value.float() if key in sums else value.float()
            seen.extend(zip(batch["patient"], batch["z"].tolist(), strict=True))
            steps += 1
            if progress.due(steps):
                slices = steps * s.batch_size * env.world_size
                progress.update(steps, slices, float(sums["total"]) / steps)
        seconds = time.perf_counter() - start

        keys = list(sums)
        totals = all_reduce_sum(
            torch.stack([*(sums[k] for k in keys), torch.tensor(float(steps), device=device)]),
            env,
        ).tolist()
        means = {k: totals[i] / totals[-1] for i, k in enumerate(keys)}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise DivergedError(
                f"non-finite losses {bad} in stage {self.stage} epoch {epoch} (global "
                f"{global_epoch}); the last checkpoint is the epoch before. Fix: lower lr, or "
                "set training.bf16 false on GPU"
            )
        everyone = [item for part in all_gather_objects(seen, env) for item in part]
        row: dict[str, Any] = {
            "epoch": epoch,
            "global_epoch": global_epoch,
            "stage": self.stage,
            "lr": lr,
            **means,
            "slices": len(everyone),
            "distinct_slices": len(set(everyone)),
            "ranks": env.world_size,
            "seconds": seconds,
            "slices_per_s": len(everyone) / seconds if seconds > 0 else 0.0,
        }
        progress.close()
        summary = " ".join(f"{k} {means[k]:.4g}" for k in ("total", "seg_total") if k in means)
        _say(env, f"{label} done: {summary} lr {lr:.3g} {seconds:.1f}s")
        return row

    def _save(self, epoch: int, row: dict[str, Any]) -> None:
        """Checkpoint of the finished epoch (pools gathered from every rank, rank 0 writes)."""
        pools = None
        if self.gan_loss is not None:
            mine = {
                "pet": self.gan_loss.pool_pet.state_dict(),
                "ct": self.gan_loss.pool_ct.state_dict(),
            }
            pools = all_gather_objects(mine, self.env)
        if not self.env.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "variant": self.job.variant,
            "stage": self.stage,
            "epoch": epoch,
            "global_epoch": row["global_epoch"],
            "settings": self.settings.to_dict(),
            "presets": self.presets,
            "networks": self.nets.state(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "pools": pools,
            "rng": capture_rng_state(),
            "history": self.history,
            "previous_history": self.previous_history,
            "world_size": self.env.world_size,
        }
        save_checkpoint(self.checkpoints / "last.pt", state)
        write_losses_csv(self.out / "losses.csv", self.history)
        self._status(epoch=epoch, global_epoch=row["global_epoch"], phase="saved")

    def _write_outputs(self, model: Path) -> None:
        content = trained_model_content(
            variant=self.job.variant,
            stage=self.stage,
            settings=self.settings.to_dict(),
            presets=self.presets,
            state=self.nets.state(),
            train_patients=self.train_patients,
            validation_patients=self.validator.patients if self.validator else [],
            epochs=self.epochs,
            global_epochs=self.offset + self.epochs,
            history=[*self.previous_history, *self.history],
        )
        write_trained_model(model, content)
        write_losses_csv(self.out / "losses.csv", self.history)
        plot_losses(
            self.out / "losses.png",
            self.history,
            title=f"{self.job.variant}, stage {self.stage} ({self.settings.model_preset})",
        )
        self._status(
            epoch=self.epochs - 1, global_epoch=self.offset + self.epochs - 1, phase="done"
        )
        _say(self.env, f"wrote {model}")


__all__ = ["TrainJob", "Trainer", "load_trained_model", "run_training", "seed_everything"]
