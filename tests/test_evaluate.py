"""Per-patient scores and the cohort summary tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from abmseg.evaluate.patient import flatten, patient_scores
from abmseg.evaluate.summary import PAPER, markdown, summarise

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def make_patient(seed: int):
    rng = np.random.default_rng(seed)
    pet = rng.uniform(0, 4, (4, 12, 12))
    spet = pet + rng.normal(0, 0.2, pet.shape)
    body = np.ones(pet.shape, bool)
    gt = np.zeros(pet.shape, np.uint8)
    gt[:, 2:5, 2:5], gt[:, 6:9, 2:5], gt[:, 2:5, 7:10] = 1, 2, 3
    pred = gt.copy()
    pred[:, 2:5, 7:10] = 0
    return patient_scores(spet, pet, body, pred, gt, (2.5, 1.0, 1.0), REGIONS, 10.0)


def test_patient_scores_and_flat_row():
    scores = make_patient(0)
    row = flatten("P1", "full", scores)
    assert row["patient_id"] == "P1" and row["variant"] == "full"
    assert 20 < row["psnr_db"] < 40 and 0 < row["ssim"] <= 1 and 0 < row["nmse"] < 0.1
    assert row["dice_lumbosacral_spine"] == 1.0 and row["dice_lower_pelvis"] == 0.0
    assert math.isnan(row["assd_mm_lower_pelvis"])
    assert row["dice_mean"] == pytest.approx(2 / 3)


def test_summary_mean_sd_and_undefined_counts():
    rows = [flatten(f"P{k}", "full", make_patient(k)) for k in range(3)]
    table = summarise(pd.DataFrame(rows))
    psnr = table[table.metric == "psnr_db"].iloc[0]
    values = [r["psnr_db"] for r in rows]
    assert psnr["mean"] == pytest.approx(np.mean(values))
    assert psnr["sd"] == pytest.approx(np.std(values, ddof=1))
    assert psnr["paper_mean"] == PAPER["psnr_db"][0]
    assd = table[table.metric == "assd_mm_lower_pelvis"].iloc[0]
    assert assd["n"] == 0 and assd["n_undefined"] == 3


def test_markdown_has_both_tables_with_the_paper_rows():
    rows = [flatten(f"P{k}", v, make_patient(k)) for k in range(2) for v in ("full", "ct_only")]
    text = markdown(summarise(pd.DataFrame(rows)))
    assert "Table 1" in text and "Table 2: Dice" in text and "Table 2: ASSD" in text
    assert (
        "| paper (this method) | 76 | 26.42 +- 0.63 | 0.894 +- 0.011 | 0.0235 +- 0.0026 |" in text
    )
    assert text.count("| full |") == 3 and text.count("| ct_only |") == 3
    assert "(2 undefined)" in text


def test_reference_pet_is_clipped_to_the_suv_range_the_networks_see():
    pet = np.full((2, 8, 8), 1.0)
    pet[:, :2, :2] = 20.0  # a bladder above the SUV ceiling
    best_possible = np.clip(pet, 0, 10.0)
    labels = np.zeros(pet.shape, np.uint8)
    scores = patient_scores(
        best_possible, pet, np.ones(pet.shape, bool), labels, labels, (1, 1, 1), REGIONS, 10.0
    )
    assert scores["synthesis"]["psnr_db"] == float("inf")
    assert scores["synthesis"]["nmse"] == 0.0
