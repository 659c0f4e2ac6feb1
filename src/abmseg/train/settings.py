"""Training settings: the ``training`` section of the config (plus ``seed``, ``model_preset``).

Kept as one frozen dataclass so a checkpoint or model.pt records exactly what produced it, and a
resumed run can refuse a checkpoint made with different settings instead of silently mixing them.
Defaults are the paper's (config/config.yaml); ``from_config`` rejects unknown training keys so a
typo never falls back to a default unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from abmseg.errors import ConfigError
from abmseg.train.augment import AugmentSettings

# Fields that may change between a checkpoint and its resume without changing the result:
# worker count (batches depend only on seed and epoch), where augmentation runs (the same numbers;
# bit-identical on a CPU) and the length of the current stage (training longer continues the
# same run).
RESUME_FREE = ("workers", "augment_on_device", "epochs_stage1", "epochs_stage2")


@dataclass(frozen=True)
class TrainSettings:
    """Everything the training loop needs besides data, variant and stage."""

    model_preset: str = "paper"
    seed: int = 42
    image_size: int = 256
    batch_size: int = 4  # per process: under DDP the effective batch is batch_size x ranks
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (150, 300)  # global epochs (stage 2 continues stage 1's count)
    lr_gamma: float = 0.1
    epochs_stage1: int = 150
    epochs_stage2: int = 200
    max_slices_per_epoch: int | None = None  # over all ranks; None = every body slice
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    workers: int = 4
    # Rotation, flip and jitter as one batched grid_sample on the training device instead of per
    # slice in the loader workers (abmseg.train.augment.augment_batch): same random numbers.
    augment_on_device: bool = False
    bf16: bool = True  # CUDA only
    body_threshold: float = -0.9
    patients_per_block: int = 4  # shuffle blocks of this many patients (= the volume cache size)
    # Stage 2: the sPET MP-FPSN trains on is the diffusion's one-step x0 estimate from the
    # pseudo-PET noised to t ~ U{0 .. fraction x T - 1} (see abmseg.train.stage2 for why < 1).
    spet_t_fraction: float = 0.5
    # Same epochs and learning-rate schedule for every variant (the validation study): a variant
    # without the diffusion also runs stage 2, training its stage-1 networks on (false: the
    # paper's schedule, where ct_only and cyclegan stop after stage 1).
    equal_budget: bool = False
    # Stage-2 dynamics, measured by the validation study (docs/validation.md, risk 4); the
    # defaults are the method as published. The diffusion's learning rate is this multiple of the
    # scheduled one; for the first ``spet_warmup_epochs`` stage-2 epochs MP-FPSN reads the
    # pseudo-PET instead of the untrained denoiser's one-step estimate; and with
    # ``seg_grad_into_denoiser`` false the joint variant's segmentation loss still reaches
    # G_CT->PET through the denoiser but no longer trains the denoiser itself.
    diffusion_lr_scale: float = 1.0
    spet_warmup_epochs: int = 0
    seg_grad_into_denoiser: bool = True

    def __post_init__(self) -> None:
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.batch_size < 1 or self.epochs_stage1 < 1 or self.epochs_stage2 < 1:
            raise ValueError("batch_size and the epochs of both stages must be at least 1")
        if self.max_slices_per_epoch is not None and self.max_slices_per_epoch < 1:
            raise ValueError("max_slices_per_epoch must be null or at least 1")
        if not 0.0 < self.spet_t_fraction <= 1.0:
            raise ValueError(f"spet_t_fraction must lie in (0, 1], got {self.spet_t_fraction}")
        if self.diffusion_lr_scale <= 0:
            raise ValueError(f"diffusion_lr_scale must be > 0, got {self.diffusion_lr_scale}")
        if self.spet_warmup_epochs < 0:
            raise ValueError(f"spet_warmup_epochs must be >= 0, got {self.spet_warmup_epochs}")
        if self.patients_per_block < 0:
            raise ValueError("patients_per_block must be >= 0 (0 = shuffle all slices)")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainSettings:
        """Build from the workflow's whole config (``training``, ``seed``, ``model_preset``)."""
        training = dict(config.get("training") or {})
        known = {f.name for f in fields(cls)} - {"model_preset", "seed"}
        unknown = sorted(set(training) - known)
        if unknown:
            raise ConfigError(
                f"unknown training settings {unknown}; known: {sorted(known)}",
                "fix the spelling or remove the key",
            )
        values: dict[str, Any] = dict(training)
        if "model_preset" in config:
            values["model_preset"] = config["model_preset"]
        if "seed" in config:
            values["seed"] = config["seed"]
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config 'training': {error}", "correct the value") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Inverse of ``to_dict`` (missing keys take the defaults)."""
        values = dict(values)
        if "augment" in values and not isinstance(values["augment"], AugmentSettings):
            values["augment"] = AugmentSettings(**values["augment"])
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        if "lr_milestones" in values:
            values["lr_milestones"] = tuple(int(m) for m in values["lr_milestones"])
        floats = ("lr", "weight_decay", "lr_gamma", "body_threshold", "spet_t_fraction",
                  "diffusion_lr_scale")  # fmt: skip
        for name in floats:
            if name in values:
                values[name] = float(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings) for checkpoints, trained models and JSON."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    def epochs(self, stage: int) -> int:
        """Number of epochs of ``stage`` (1 or 2)."""
        return self.epochs_stage1 if stage == 1 else self.epochs_stage2

    def epoch_offset(self, stage: int) -> int:
        """Global number of the first epoch of ``stage``: stage 2 continues stage 1's count."""
        return 0 if stage == 1 else self.epochs_stage1

    def lr_at(self, global_epoch: int) -> float:
        """MultiStepLR on global epochs: lr x gamma^(milestones already reached)."""
        reached = sum(1 for m in self.lr_milestones if global_epoch >= m)
        return self.lr * self.lr_gamma**reached

    def optimizer_lr(self, optimizer: str, global_epoch: int) -> float:
        """The learning rate of one optimizer ("gen", "disc" or "diff") in ``global_epoch``."""
        scale = self.diffusion_lr_scale if optimizer == "diff" else 1.0
        return self.lr_at(global_epoch) * scale


def resume_differences(saved: Mapping[str, Any], current: TrainSettings) -> list[str]:
    """Settings that differ between a checkpoint and this run, ignoring ``RESUME_FREE`` ones.
    A setting the checkpoint predates counts as its default (older checkpoints stay resumable)."""
    now = current.to_dict()
    saved = {**TrainSettings().to_dict(), **saved}
    keys = sorted((set(saved) | set(now)) - set(RESUME_FREE))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


__all__ = ["RESUME_FREE", "TrainSettings", "resume_differences"]
