"""Score one test patient: synthesis (sPET vs PET on SUV, in the body) and ABM per region."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.io.volume import read_nifti
from abmseg.metrics import nmse, psnr, region_scores, ssim
from abmseg.preprocess.roi import body_mask
from abmseg.regions import DEFAULT_REGIONS
from abmseg.settings import from_section, pick


@dataclass(frozen=True)
class EvaluateSettings:
    """The region table, SSIM's window (config['metrics']) and the SUV ceiling, which is PSNR's
    MAX and SSIM's data range (config['normalise']['suv_ceiling'])."""

    regions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    ssim_sigma: float = 1.5
    max_suv: float = 10.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvaluateSettings:
        values: dict[str, Any] = pick(config, "regions")
        if "suv_ceiling" in config.get("normalise", {}):
            values["max_suv"] = float(config["normalise"]["suv_ceiling"])
        metrics = from_section(_Metrics, config.get("metrics"), "metrics")
        return cls(**values, ssim_sigma=metrics.ssim_sigma)


@dataclass(frozen=True)
class _Metrics:
    """config['metrics'] alone, so an unknown key there is refused like anywhere else."""

    ssim_sigma: float = 1.5


def patient_scores(
    spet_suv: np.ndarray | None,
    pet_suv: np.ndarray,
    body_mask: np.ndarray,
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing_zyx: Sequence[float],
    regions: Mapping[str, int],
    max_suv: float,
    ssim_sigma: float = 1.5,
) -> dict:
    """All metrics of one patient as a flat-ish dict ready for JSON.

    ``max_suv`` is PSNR's MAX and SSIM's data range (the SUV normalisation ceiling). The real
    PET is clipped to [0, max_suv] first: the networks see and produce SUV only in that range
    (the normalisation), so the bladder above it would otherwise cap every score. A method
    without a synthetic PET (``spet_suv`` None: a baseline of the validation study) gets
    ``synthesis`` None.
    """
    synthesis = None
    if spet_suv is not None:
        pet_suv = np.clip(pet_suv, 0.0, max_suv)
        synthesis = {
            "psnr_db": psnr(spet_suv, pet_suv, max_suv, body_mask),
            "ssim": ssim(spet_suv, pet_suv, max_suv, body_mask, ssim_sigma),
            "nmse": nmse(spet_suv, pet_suv, body_mask),
            "max_suv": max_suv,
            "body_voxels": int(np.count_nonzero(body_mask)),
        }
    return {
        "synthesis": synthesis,
        "segmentation": region_scores(pred_labels, gt_labels, spacing_zyx, regions),
    }


def flatten(patient: str, variant: str, scores: dict) -> dict:
    """One row of per_patient.tsv."""
    row = {"patient_id": patient, "variant": variant}
    synthesis = scores["synthesis"] or {}  # None: a method without a synthetic PET (ct_only)
    row.update({k: synthesis.get(k, float("nan")) for k in ("psnr_db", "ssim", "nmse")})
    for region, values in scores["segmentation"].items():
        row[f"dice_{region}"] = values["dice"]
        row[f"assd_mm_{region}"] = values["assd_mm"]
    return row


def score_patient_files(
    patient: str,
    spet_path: str | Path | None,
    abm_path: str | Path,
    pet_path: str | Path,
    label_path: str | Path,
    ct_path: str | Path,
    settings: EvaluateSettings,
) -> dict:
    """Read one patient's prediction and truth (all on the cropped grid) and score them.

    The body mask is recomputed from the cropped CT (HU) the same way the crop made it. A method
    without a synthetic PET passes ``spet_path`` None and is scored on its mask only.
    """
    sources = (
        ("spet", spet_path, "infer"),
        ("abm", abm_path, "infer"),
        ("pet", pet_path, "crop"),
        ("label", label_path, "crop"),
        ("ct", ct_path, "crop"),
    )
    images = {
        name: read_nifti(path, patient, made_by=maker)
        for name, path, maker in sources
        if path is not None
    }
    arrays = {name: sitk.GetArrayFromImage(image) for name, image in images.items()}
    shapes = {name: array.shape for name, array in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise PatientDataError(
            patient,
            spet_path,
            f"prediction and truth grids differ: {shapes}",
            "rerun inference for this patient (its inputs changed since)",
        )
    body, _ = body_mask(arrays["ct"])
    spacing_zyx = tuple(reversed(images["ct"].GetSpacing()))
    scores = patient_scores(
        arrays.get("spet"),
        arrays["pet"],
        body,
        arrays["abm"],
        arrays["label"],
        spacing_zyx,
        settings.regions,
        settings.max_suv,
        settings.ssim_sigma,
    )
    return {"patient_id": patient, **scores}
