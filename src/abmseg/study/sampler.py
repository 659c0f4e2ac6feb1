"""The sampler sweep of the study: the full model's Dice, sPET PSNR and time per patient for a
set of reverse-chain settings, each named by a short string that is also a file name.

``ddim-10-T``: DDIM, 10 steps from full noise (t = T); ``ddim-10-250``: from t = 250 (the
pseudo-PET noised only part-way, SDEdit style); ``ddim-10-best``: from the partial start chosen
on training patients (``select_start``); ``ddpm-1000-T``: the full ancestral chain; ``pseudo``:
no diffusion at all (MP-FPSN reads the CycleGAN pseudo-PET).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.atomic import write_json
from abmseg.evaluate.patient import EvaluateSettings, patient_scores
from abmseg.infer.networks import load_networks
from abmseg.infer.patient import spet_to_suv
from abmseg.infer.predict import InferenceNetworks, InferenceSettings, predict_volume
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import read_nifti
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.preprocess.roi import body_mask
from abmseg.study.plan import BEST_START, FULL_NOISE, StudyPlan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerPoint:
    """One reverse-chain setting; ``start`` is a timestep, "T" or "best"."""

    sampler: str
    steps: int | None
    start: str

    @property
    def name(self) -> str:
        return "pseudo" if self.sampler == "pseudo" else f"{self.sampler}-{self.steps}-{self.start}"

    @classmethod
    def parse(cls, name: str) -> SamplerPoint:
        """The inverse of ``name``; a ValueError names the accepted forms."""
        if name == "pseudo":
            return cls("pseudo", None, FULL_NOISE)
        parts = name.split("-")
        ok = len(parts) == 3 and parts[0] in ("ddim", "ddpm") and parts[1].isdigit()
        ok = ok and (parts[2] in (FULL_NOISE, BEST_START) or parts[2].isdigit())
        if not ok:
            raise ValueError(
                f"sampler point {name!r}: use ddim-<steps>-<start>, ddpm-<steps>-<start> or "
                "pseudo, where start is T, best or a timestep"
            )
        return cls(parts[0], int(parts[1]), parts[2])

    def settings(self, base: InferenceSettings, best_start: int | None = None) -> InferenceSettings:
        """``base`` with this point's sampler, steps and start step."""
        if self.sampler == "pseudo":
            return replace(base, sampler="pseudo")
        if self.start == BEST_START:
            if best_start is None:
                raise ValueError(f"{self.name} needs the chosen start step (select_start)")
            start: int | None = best_start
        else:
            start = None if self.start == FULL_NOISE else int(self.start)
        return replace(base, sampler=self.sampler, steps=self.steps, start_step=start)


@dataclass(frozen=True)
class ScoredPatient:
    """What the sweep reads of one patient: normalised CT, and PET, label, CT (HU) on the
    cropped grid."""

    patient_id: str
    normalized_ct: str
    pet: str
    label: str
    ct: str


def run_point(
    point: SamplerPoint,
    patients: Sequence[ScoredPatient],
    networks: InferenceNetworks,
    device: torch.device,
    base: InferenceSettings,
    evaluate: EvaluateSettings,
    suv_ceiling: float,
    best_start: int | None = None,
) -> dict[str, Any]:
    """Predict and score every patient with ``point``; the time is the networks' only (the
    reading, writing and scoring around them do not depend on the sampler)."""
    settings = point.settings(base, best_start)
    pseudo_settings = replace(base, sampler="pseudo")
    rows = []
    for index, patient in enumerate(patients):
        ct_image = read_nifti(patient.normalized_ct, patient.patient_id, made_by="normalise")
        ct = sitk.GetArrayFromImage(ct_image)
        if index == 0:  # untimed warm-up (allocator, kernel choice) on two middle slices
            middle = ct.shape[0] // 2
            predict_volume(ct[middle : middle + 2], networks, settings, device)
        start = time.perf_counter()
        spet, labels = predict_volume(ct, networks, settings, device)
        seconds = time.perf_counter() - start
        if point.sampler == "pseudo" or networks.diffusion is None:  # same as the point: reuse
            pseudo = spet
        else:
            pseudo, _ = predict_volume(ct, networks, pseudo_settings, device)
        truth = {
            name: sitk.GetArrayFromImage(read_nifti(path, patient.patient_id, made_by="crop"))
            for name, path in (("pet", patient.pet), ("label", patient.label), ("ct", patient.ct))
        }
        body, _ = body_mask(truth["ct"])
        # a CT-only model has no sPET (predict_volume leaves SUV 0): score its labels only
        has_spet = networks.g_ct2pet is not None
        spet_suv = spet_to_suv(spet, suv_ceiling) if has_spet else None
        scores = patient_scores(
            spet_suv,
            truth["pet"],
            body,
            labels,
            truth["label"],
            tuple(reversed(ct_image.GetSpacing())),
            evaluate.regions,
            evaluate.max_suv,
            evaluate.ssim_sigma,
        )
        synthesis = scores["synthesis"] or {}
        to_pseudo = (
            np.abs(spet_suv - spet_to_suv(pseudo, suv_ceiling))[body] if has_spet else np.zeros(0)
        )
        rows.append(
            {
                "patient_id": patient.patient_id,
                "dice_mean": scores["segmentation"]["mean"]["dice"],
                "dice": {k: v["dice"] for k, v in scores["segmentation"].items()},
                "psnr": synthesis.get("psnr_db"),
                "ssim": synthesis.get("ssim"),
                "spet_to_pseudo_mae_suv": float(to_pseudo.mean()) if to_pseudo.size else None,
                "seconds": seconds,
            }
        )
    return {
        "point": point.name,
        "sampler": point.sampler,
        "steps": point.steps,
        "start_step": _start_step(settings, networks),
        "start": point.start,
        "device": str(device),
        "patients": rows,
    }


def _start_step(settings: InferenceSettings, networks: InferenceNetworks) -> int | None:
    """The timestep the chain starts from (T for full noise); None without a diffusion."""
    if settings.sampler == "pseudo" or networks.diffusion is None:
        return None
    return settings.start_step or int(networks.diffusion.schedule.T)


def choose_start(results: Mapping[int, Mapping[str, Any]]) -> int:
    """The candidate start step with the highest mean Dice (ties: the earliest, i.e. the least
    noise); ``results`` maps start step -> ``run_point`` result."""
    means = {
        start: float(np.mean([r["dice_mean"] for r in result["patients"]]))
        for start, result in results.items()
    }
    best = max(means.values())
    return min(start for start, value in means.items() if value == best)


def scored_patients(patients: Sequence[str], volumes: Sequence[str]) -> list:
    """ScoredPatient per patient from the rule's volume list (normalised CT, cropped PET, label
    and CT per patient, in the order common.smk's scored_volumes gives them)."""
    if len(volumes) != 4 * len(patients):
        raise ValueError(f"{len(volumes)} volumes for {len(patients)} patients (4 each expected)")
    return [
        ScoredPatient(patient, *map(str, volumes[4 * i : 4 * i + 4]))
        for i, patient in enumerate(patients)
    ]


def _sweep_context(model: str | Path, config: Mapping[str, Any], threads: int):
    networks, device = load_networks(model, threads=threads)
    return (
        networks,
        device,
        InferenceSettings.from_config(config),
        EvaluateSettings.from_config(config),
        NormaliseSettings.from_config(config).suv_ceiling,
    )


def run_sampler_point(
    point_name: str,
    model: str | Path,
    patients: Sequence,
    config: Mapping[str, Any],
    threads: int,
    out: str | Path,
    start_selection: str | Path | None = None,
) -> dict[str, Any]:
    """One point of the sweep over ``patients``, written to ``out`` (JSON)."""
    point = SamplerPoint.parse(point_name)
    best = None
    if start_selection:
        best = int(read_json(start_selection, keys=("chosen_start_step",))["chosen_start_step"])
    networks, device, base, evaluate, ceiling = _sweep_context(model, config, threads)
    result = run_point(point, patients, networks, device, base, evaluate, ceiling, best)
    write_json(out, result)
    return result


def select_start(
    model: str | Path,
    patients: Sequence,
    config: Mapping[str, Any],
    threads: int,
    out: str | Path,
) -> int:
    """DDIM-10 from each candidate start on training patients; the best mean Dice is chosen."""
    plan = StudyPlan.from_config(config)
    networks, device, base, evaluate, ceiling = _sweep_context(model, config, threads)
    results = {}
    for start in plan.start_candidates:
        point = SamplerPoint("ddim", 10, str(start))
        results[start] = run_point(point, patients, networks, device, base, evaluate, ceiling)
        logger.info(
            "start %d: mean Dice %.4f",
            start,
            float(np.mean([r["dice_mean"] for r in results[start]["patients"]])),
        )
    chosen = choose_start(results)
    write_json(
        out,
        {
            "chosen_start_step": chosen,
            "selected_on": [p.patient_id for p in patients],
            "note": "training patients (seen in training): the choice never reads a test patient",
            "candidates": {str(k): v for k, v in results.items()},
        },
    )
    return chosen
