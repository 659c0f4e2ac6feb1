"""Run the trained networks over every axial slice of one normalised CT volume.

Slices go through the same padded-square resize as in training (abmseg.slicing) and come
back through its exact inverse, so predictions land on the cropped grid voxel for voxel. Slices
without body (as in training) are not sent through the networks: their sPET is -1 (SUV 0) and
their label 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from abmseg.infer.uncertainty import EnsembleAccumulator, EnsembleSummary
from abmseg.preprocess.roi import box_slices
from abmseg.settings import from_section
from abmseg.slicing import SliceGeometry, body_slices


@dataclass(frozen=True)
class InferenceSettings:
    """config['inference'], with config['seed'] and the training's body threshold (the slices
    that count as body must be the ones the networks were trained on)."""

    sampler: str = "ddim"
    steps: int | None = 50
    start_step: int | None = None
    batch_size: int = 8
    seed: int = 42
    body_threshold: float = -0.9
    # The ensemble (issue 18): sampler seeds, and each also on the left-right mirrored CT. 1 and
    # false are one pass, exactly the single prediction.
    samples: int = 1
    tta: bool = False
    # bf16 autocast of the networks on a GPU (ignored on a CPU); off by default until its Dice and
    # PSNR are shown within 0.005 of fp32 on a GPU (BENCHMARKS.md, issue 17).
    bf16: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InferenceSettings:
        fixed: dict[str, Any] = {}
        if "seed" in config:
            fixed["seed"] = int(config["seed"])
        if "body_threshold" in config.get("training", {}):
            fixed["body_threshold"] = float(config["training"]["body_threshold"])
        return from_section(cls, config.get("inference"), "inference", **fixed)

    def sampler_record(self) -> dict[str, Any]:
        """The sampler as a model bundle records it (bundle.json's ``sampler``)."""
        keys = ("sampler", "steps", "start_step", "batch_size", "seed", "samples", "tta")
        return {key: getattr(self, key) for key in keys}


@dataclass
class InferenceNetworks:
    """The modules one variant uses at inference (eval mode); absent ones are None."""

    mpfpsn: nn.Module
    image_size: int
    g_ct2pet: nn.Module | None = None
    diffusion: nn.Module | None = None


@torch.no_grad()
def predict_batch(
    ct: torch.Tensor,
    networks: InferenceNetworks,
    settings: InferenceSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,1,S,S) CT in [-1,1] -> sPET (N,1,S,S) in [-1,1] and class probabilities (N,C,S,S)."""
    spet = None
    if networks.g_ct2pet is not None:
        spet = networks.g_ct2pet(ct)
        if networks.diffusion is not None and settings.sampler != "pseudo":
            spet = networks.diffusion.refine(
                spet,
                ct,
                sampler=settings.sampler,
                steps=settings.steps,
                start_step=settings.start_step,
                generator=generator,
            )
    logits = networks.mpfpsn(ct, spet)
    if spet is None:
        spet = torch.full_like(ct, -1.0)
    return spet.float().clamp(-1, 1), torch.softmax(logits.float(), dim=1)


def precision(settings: InferenceSettings, device: torch.device) -> AbstractContextManager:
    """bf16 autocast where asked for and on a GPU; otherwise no context of its own (a caller's
    autocast, as bench/bf16_inference.py sets on a CPU, then still applies)."""
    if settings.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_volume(
    ct: np.ndarray,
    networks: InferenceNetworks,
    settings: InferenceSettings,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised CT volume (z, y, x) -> (sPET in [-1, 1], uint8 labels), both (z, y, x): one
    pass, no mirroring (``predict_ensemble`` with K = 1).

    ``on_batch(done, total)`` is called before the first and after each batch of body slices
    (a progress bar)."""
    spet, summary = predict_ensemble(ct, networks, settings, device, on_batch=on_batch)
    return spet, summary.labels


def pass_seed(seed: int, sample: int) -> int:
    """The sampler seed of ensemble sample ``sample``: sample 0 keeps ``seed`` (so K = 1 is the
    single prediction), the others get well-spread seeds of their own."""
    if sample == 0:
        return seed
    return int(np.random.SeedSequence([seed, sample]).generate_state(1, dtype=np.uint64)[0] >> 1)


def predict_ensemble(
    ct: np.ndarray,
    networks: InferenceNetworks,
    settings: InferenceSettings,
    device: torch.device,
    samples: int = 1,
    mirror: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, EnsembleSummary]:
    """``samples`` sampler seeds, each also on the left-right mirrored CT when ``mirror``:
    (the passes' mean sPET in [-1, 1], their class probabilities' mean and uncertainty maps).

    A mirrored pass flips the CT's x axis (patient left-right) before the networks and their
    outputs back after, with its sample's seed (the sampler's noise is drawn on the flipped
    grid, so it is not the mirror image of the unflipped pass's noise). Without a stochastic
    sampler (no diffusion, or sampler ``pseudo``) every seed gives the same pass, so one is run.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if networks.diffusion is None or settings.sampler == "pseudo":
        samples = 1
    plan = [(k, flip) for k in range(samples) for flip in ((False, True) if mirror else (False,))]
    slices = [int(z) for z in body_slices(ct, settings.body_threshold)]
    total = len(slices) * len(plan)
    if on_batch is not None:
        on_batch(0, total)
    accumulator = EnsembleAccumulator()
    spet_sum: np.ndarray | None = None
    for index, (sample, flip) in enumerate(plan):
        done = index * len(slices)

        def progress(count: int, _: int, done: int = done) -> None:
            if on_batch is not None and count:
                on_batch(done + count, total)

        volume = ct[:, :, ::-1] if flip else ct
        spet, probabilities = _predict_pass(
            volume, slices, networks, settings, device, pass_seed(settings.seed, sample), progress
        )
        if flip:
            spet, probabilities = spet[:, :, ::-1], probabilities[..., ::-1]
        # each pass's arrays are fresh: the first becomes the running sum, no copy
        spet_sum = spet if spet_sum is None else spet_sum + spet
        accumulator.add(probabilities, owned=True)
    mean_spet = spet_sum if len(plan) == 1 else spet_sum / np.float32(len(plan))
    return mean_spet, accumulator.summary()


def _predict_pass(
    ct: np.ndarray,
    slices: list[int],
    networks: InferenceNetworks,
    settings: InferenceSettings,
    device: torch.device,
    seed: int,
    on_batch: Callable[[int, int], None],
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the body slices: (sPET (z, y, x), class probabilities (C, z, y, x)); slices
    without body stay sPET -1 and certain background."""
    depth, height, width = ct.shape
    geometry = SliceGeometry(height, width, networks.image_size)
    spet = np.full(ct.shape, -1.0, dtype=np.float32)
    probabilities: np.ndarray | None = None
    generator = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, len(slices), settings.batch_size):
        batch_z = slices[start : start + settings.batch_size]
        batch = torch.stack([geometry.to_network(ct[z], kind="image") for z in batch_z])
        with precision(settings, device):
            spet_net, probs = predict_batch(
                batch[:, None].to(device), networks, settings, generator
            )
        if probabilities is None:
            probabilities = np.zeros((probs.shape[1], *ct.shape), dtype=np.float32)
            probabilities[0] = 1.0
        for k, z in enumerate(batch_z):
            if networks.g_ct2pet is not None:  # a CT-only variant has no sPET: it stays SUV 0
                spet[z] = geometry.from_network(spet_net[k, 0].cpu(), kind="image")
            probabilities[:, z] = geometry.from_network(probs[k].cpu(), kind="image")
        on_batch(start + len(batch_z), len(slices))
    if probabilities is None:  # no body slice at all: every voxel certain background
        probabilities = np.zeros((networks.mpfpsn.n_classes, *ct.shape), dtype=np.float32)
        probabilities[0] = 1.0
    return spet, probabilities


def paste_into_ct_grid(
    labels: np.ndarray, box: Mapping[str, list[int]], ct_shape_zyx: tuple[int, ...]
) -> np.ndarray:
    """Put a label map of the cropped grid back at its box in the full CT grid (zeros elsewhere)."""
    full = np.zeros(ct_shape_zyx, dtype=labels.dtype)
    full[box_slices(box, labels.shape)] = labels
    return full
