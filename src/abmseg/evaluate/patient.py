"""Score one test patient: synthesis (sPET vs PET on SUV, in the body) and ABM per region."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from abmseg.metrics import nmse, psnr, region_scores, ssim


def patient_scores(
    spet_suv: np.ndarray,
    pet_suv: np.ndarray,
    body_mask: np.ndarray,
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing_zyx: Sequence[float],
    regions: Mapping[str, int],
    max_suv: float,
) -> dict:
    """All metrics of one patient as a flat-ish dict ready for JSON.

    ``max_suv`` is PSNR's MAX and SSIM's data range (the SUV normalisation ceiling).
    """
    return {
        "synthesis": {
            "psnr_db": psnr(spet_suv, pet_suv, max_suv, body_mask),
            "ssim": ssim(spet_suv, pet_suv, max_suv, body_mask),
            "nmse": nmse(spet_suv, pet_suv, body_mask),
            "max_suv": max_suv,
            "body_voxels": int(np.count_nonzero(body_mask)),
        },
        "segmentation": region_scores(pred_labels, gt_labels, spacing_zyx, regions),
    }


def flatten(patient: str, variant: str, scores: dict) -> dict:
    """One row of per_patient.tsv."""
    row = {"patient_id": patient, "variant": variant}
    synthesis = scores["synthesis"]
    row.update({k: synthesis[k] for k in ("psnr_db", "ssim", "nmse")})
    for region, values in scores["segmentation"].items():
        row[f"dice_{region}"] = values["dice"]
        row[f"assd_mm_{region}"] = values["assd_mm"]
    return row
