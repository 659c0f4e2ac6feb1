"""Validation after every epoch: the held-out training-side patients, scored without learning.

Why: training losses alone cannot show overfitting. The validation patients (config
``split.validation_fraction``, :mod:`abmseg.cohort.split`) are never fitted on; after each epoch
the networks, in eval mode and without gradients, see every body slice of theirs, unaugmented:

* ``val_seg_total``, ``val_seg_dice``, ``val_seg_ce``: the segmentation loss as training computes
  it (Dice loss + cross-entropy), so it sits on the same scale as the training ``seg_total``;
* ``val_synth_l1``: mean absolute difference between the sPET MP-FPSN reads and the real PET
  (normalised units), for variants that synthesise one;
* ``val_diff_total``: the diffusion loss on the real PET (stage 2);
* ``val_dice_<region>``: hard Dice of the arg-max masks per region, per patient (summed over the
  patient's slices), averaged over the patients where the region is present in truth or
  prediction; ``val_dice_mean`` is the mean of the regions.

The sPET is what training feeds MP-FPSN (the CycleGAN pseudo-PET, in stage 2 the diffusion's
one-step estimate; :mod:`abmseg.train.stage2`), not the full sampler chain of inference, which
would cost 10-50 denoiser passes per slice and epoch. Masks are scored on the network grid
(``image_size``), not the planning CT: these numbers follow training, the test metrics of rule
``metrics`` are the results. The random draws of the one-step estimate and of the diffusion loss
come from a seed fixed per (seed, rank, epoch), so a rerun draws the same, and validation leaves
the training's random streams as they were (``torch.random.fork_rng``). Under DDP every rank
scores every ``world_size``-th slice; the sums are added.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from abmseg.errors import ConfigError
from abmseg.train.augment import derive_seed
from abmseg.train.distributed import DistEnv, all_reduce_sum
from abmseg.train.slices import SliceDataset, SliceIndex
from abmseg.train.stage1 import StepModules
from abmseg.train.stage2 import one_step_spet

VALIDATION_STREAM = 7  # seed part that keeps validation's draws apart from training's
LOSS_TERMS = ("seg_total", "seg_dice", "seg_ce", "synth_l1", "diff_total")


def dice_columns(regions: Mapping[str, int]) -> list[str]:
    """``val_dice_<region>`` in label-value order, then ``val_dice_mean``."""
    names = [name for name, _ in sorted(regions.items(), key=lambda item: item[1])]
    return [f"val_dice_{name}" for name in names] + ["val_dice_mean"]


def overlap_counts(logits: Tensor, target: Tensor, classes: int) -> Tensor:
    """Per slice and class: (intersection, predicted, true) voxel counts, shape (N, classes, 3)
    for the arg-max of ``logits`` (N, C, H, W) against integer ``target`` (N, H, W)."""
    predicted = torch.nn.functional.one_hot(logits.argmax(1), classes).flatten(1, 2)
    truth = torch.nn.functional.one_hot(target.long(), classes).flatten(1, 2)
    return torch.stack([(predicted * truth).sum(1), predicted.sum(1), truth.sum(1)], dim=-1).to(
        torch.float64
    )


def patient_mean_dice(counts: Tensor) -> list[float]:
    """Per class (background excluded): mean over patients of 2|P∩T| / (|P| + |T|), skipping
    patients where the class is absent from both; NaN where it is absent everywhere.
    ``counts`` is (patients, classes, 3) as summed from :func:`overlap_counts`."""
    means = []
    for c in range(1, counts.shape[1]):
        intersection, predicted, true = counts[:, c, 0], counts[:, c, 1], counts[:, c, 2]
        defined = (predicted + true) > 0
        if not bool(defined.any()):
            means.append(math.nan)
            continue
        dice = 2 * intersection[defined] / (predicted[defined] + true[defined])
        means.append(float(dice.mean()))
    return means


class Validator:
    """The validation slices of one training run and the per-epoch scoring of them."""

    def __init__(
        self,
        patients: Sequence[tuple[str, str | Path]],
        regions: Mapping[str, int],
        image_size: int,
        batch_size: int,
        body_threshold: float,
        env: DistEnv,
    ) -> None:
        self.env = env
        self.regions = dict(regions)
        self.classes = len(self.regions) + 1
        # Slices come in patient order, so two cached patients are enough.
        index = SliceIndex(patients, body_threshold, cache_size=2)
        self.patients = index.patients
        self.patient_number = {patient: i for i, patient in enumerate(self.patients)}
        dataset = SliceDataset(index, image_size, augment=False)
        if len(dataset) == 0:
            raise ConfigError(
                f"validation patients {self.patients} have no slice with body (CT above the "
                "training body threshold)",
                "check their normalised CT, or set the sheet's split column to move them",
            )
        mine = list(range(env.rank, len(dataset), env.world_size))
        self.loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, shuffle=False)

    def score(self, m: StepModules, seed: int, global_epoch: int) -> dict[str, Any]:
        """Every validation term of the current networks (eval mode, no gradients)."""
        env, nets = self.env, m.nets
        start = time.perf_counter()
        was_training = nets.mpfpsn.training
        sums = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64, device=env.device)
        counts = torch.zeros(len(self.patients), self.classes, 3, dtype=torch.float64,
                             device=env.device)  # fmt: skip
        cuda = [env.device] if env.device.type == "cuda" else []
        nets.train(False)
        try:  # fork_rng: the training's random streams come back as they were
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                torch.manual_seed(derive_seed(seed, VALIDATION_STREAM, env.rank, global_epoch))
                for batch in self.loader:
                    sums += self._batch_terms(m, batch, counts)
        finally:
            nets.train(was_training)
        sums = all_reduce_sum(sums, env)
        counts = all_reduce_sum(counts, env)
        slices = float(sums[-1])
        present = present_terms(m)
        row: dict[str, Any] = {
            f"val_{term}": float(sums[i]) / slices
            for i, term in enumerate(LOSS_TERMS)
            if term in present
        }
        dice = patient_mean_dice(counts.cpu())
        row.update(zip(dice_columns(self.regions), [*dice, _nanmean(dice)], strict=True))
        row["validation_seconds"] = time.perf_counter() - start
        return row

    def _batch_terms(self, m: StepModules, batch: dict, counts: Tensor) -> Tensor:
        """Slice-weighted loss sums of one batch (last entry: its slice count); adds the batch's
        overlap counts into ``counts`` per patient."""
        device, nets = self.env.device, m.nets
        ct = batch["ct"].to(device)
        pet = batch["pet"].to(device)
        target = batch["label"].to(device)
        n = ct.shape[0]
        terms: dict[str, Tensor] = {}
        with m.autocast():
            spet = None
            if nets.cyclegan is not None:
                spet = nets.cyclegan.g_ct2pet(ct)
                if nets.diffusion is not None and not m.spet_warmup:
                    spet = one_step_spet(nets.diffusion, spet, ct, m.spet_t_fraction)
                terms["synth_l1"] = (spet.float() - pet.float()).abs().mean()
            logits = nets.mpfpsn(ct, spet)
            seg = m.seg_loss(logits, target)
            terms.update({f"seg_{k}": v for k, v in seg.items()})
            if nets.diffusion is not None:
                terms["diff_total"] = nets.diffusion.training_loss(pet, ct, m.feature_fn)["total"]
        per_slice = overlap_counts(logits.float(), target, self.classes)
        rows = torch.tensor([self.patient_number[p] for p in batch["patient"]], device=device)
        counts.index_add_(0, rows, per_slice)
        # one tensor, no per-term host sync on a GPU
        zero = torch.zeros((), dtype=torch.float64, device=device)
        values = [terms[t].detach().double() * n if t in terms else zero for t in LOSS_TERMS]
        return torch.stack([*values, zero + n])


def present_terms(m: StepModules) -> set[str]:
    """The loss terms this variant and stage have (the same on every rank)."""
    terms = {"seg_total", "seg_dice", "seg_ce"}
    if m.nets.cyclegan is not None:
        terms.add("synth_l1")
    if m.nets.diffusion is not None:
        terms.add("diff_total")
    return terms


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


__all__ = [
    "Validator",
    "dice_columns",
    "overlap_counts",
    "patient_mean_dice",
    "present_terms",
]
