"""abmseg synth-report: statistics, baselines, the PET resampling direction and the command."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import stats

from abmseg.cli import main
from abmseg.errors import PatientDataError, SheetError
from abmseg.synth.baselines import (
    dice_from_counts,
    fit_logistic,
    quantile_candidates,
    region_dice,
    smoothed_inside,
    threshold_dice,
    tune_threshold,
)
from abmseg.synth.report import (
    GATES,
    PATIENT_COLUMNS,
    SUMMARY_COLUMNS,
    Gate,
    PatientVolumes,
    bimodality_coefficient,
    cohort_report,
    measure_patient,
    register_pet,
    voxel_auc,
)

# --- statistics ---------------------------------------------------------------------------------


def test_bimodality_coefficient_by_hand():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    n = len(x)
    d = x - x.mean()
    m2, m3, m4 = (np.mean(d**p) for p in (2, 3, 4))
    g1 = m3 / m2**1.5
    g2 = m4 / m2**2 - 3.0
    g = g1 * math.sqrt(n * (n - 1)) / (n - 2)  # bias-corrected skewness
    k = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6)  # bias-corrected excess kurtosis
    expected = (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert bimodality_coefficient(x) == pytest.approx(expected, rel=1e-12)


def test_bimodality_coefficient_known_values():
    rng = np.random.default_rng(0)
    assert bimodality_coefficient(rng.standard_normal(200_000)) == pytest.approx(1 / 3, abs=0.01)
    assert bimodality_coefficient(rng.uniform(size=200_000)) == pytest.approx(5 / 9, abs=0.01)
    two_modes = np.concatenate([rng.normal(0, 1, 50_000), rng.normal(8, 1, 50_000)])
    assert bimodality_coefficient(two_modes) > 0.8
    assert math.isnan(bimodality_coefficient(np.ones(10)))
    assert math.isnan(bimodality_coefficient(np.arange(3.0)))


def test_voxel_auc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 20, size=500).astype(float)  # many ties
    positive = rng.random(500) < 0.3 + 0.02 * scores
    u = stats.mannwhitneyu(scores[positive], scores[~positive]).statistic
    n1, n0 = positive.sum(), (~positive).sum()
    assert voxel_auc(scores, positive) == pytest.approx(u / (n1 * n0), rel=1e-12)
    assert voxel_auc([1.0, 2.0, 3.0], [False, True, True]) == 1.0
    assert voxel_auc([1.0, 1.0], [False, True]) == 0.5
    assert math.isnan(voxel_auc([1.0, 2.0], [True, True]))


def test_dice_edge_cases():
    assert dice_from_counts(0, 0, 0) == 1.0
    assert dice_from_counts(0, 5, 0) == 0.0
    assert dice_from_counts(0, 0, 5) == 0.0
    assert dice_from_counts(3, 4, 4) == 0.75
    region = np.array([1, 1, 2, 2, 3, 3], dtype=np.uint8)
    label = np.array([1, 0, 0, 0, 3, 3], dtype=np.uint8)
    pred = np.array([True, True, False, False, False, True])
    # truth of region 1 has one extra voxel outside the marrow: counted as missed
    dice = region_dice(pred, region, label, truth_counts=[2, 0, 2])
    assert dice == pytest.approx([2 * 1 / (2 + 2), 1.0, 2 * 1 / (2 + 1)])
    assert region_dice(pred | True, region, label, [2, 0, 2])[1] == 0.0  # empty truth, not pred


def test_threshold_dice_matches_direct_computation():
    rng = np.random.default_rng(2)
    score = rng.normal(size=300)
    region = rng.integers(1, 4, size=300).astype(np.uint8)
    label = np.where(rng.random(300) < 0.5, region, 0).astype(np.uint8)
    counts = [int(np.sum(label == r)) for r in (1, 2, 3)]
    thresholds = np.array([-1.0, 0.0, score[7], 5.0])
    curve = threshold_dice(score, region, label, counts, thresholds)
    for row, t in zip(curve, thresholds, strict=True):
        assert row == pytest.approx(region_dice(score >= t, region, label, counts))


def test_hu_threshold_tuning_finds_the_known_cut():
    # Two patients whose ABM is exactly the voxels with value >= 100.
    curves, pooled = [], []
    thresholds = np.array([0.0, 50.0, 100.0, 150.0])
    for seed in (3, 4):
        score = np.random.default_rng(seed).uniform(0, 200, size=1000)
        region = np.random.default_rng(seed + 10).integers(1, 4, size=1000).astype(np.uint8)
        label = np.where(score >= 100, region, 0).astype(np.uint8)
        counts = [int(np.sum(label == r)) for r in (1, 2, 3)]
        curves.append(threshold_dice(score, region, label, counts, thresholds))
        pooled.append(score)
    assert tune_threshold(curves, thresholds) == (100.0, 1.0)
    candidates = quantile_candidates(np.concatenate(pooled))
    assert len(candidates) == 41
    assert candidates[0] == pytest.approx(10, abs=3) and candidates[-1] == pytest.approx(190, abs=3)


def test_logistic_fit_recovers_a_known_model():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20_000, 2)) * [1.0, 3.0] + [0.0, 5.0]
    logit = 2.0 * x[:, 0] - 0.5 * (x[:, 1] - 5.0) + 0.3
    y = rng.random(len(x)) < 1 / (1 + np.exp(-logit))
    model = fit_logistic(x, y)
    assert model.raw_coef == pytest.approx([2.0, -0.5], rel=0.1)
    assert np.mean((model.probability(x) >= 0.5) == y) > 0.75


def test_logistic_fit_on_separable_data_stays_finite_and_separates():
    x = np.linspace(-1, 1, 200)[:, None]
    y = x[:, 0] > 0.1
    model = fit_logistic(np.column_stack([x, np.ones(200)]), y)  # with a constant column
    assert np.all(np.isfinite(model.coef)) and model.raw_coef[0] > 0
    assert np.all((model.probability(np.column_stack([x, np.ones(200)])) >= 0.5) == y)


def test_smoothing_stays_inside_the_mask():
    values = np.full((9, 9, 9), 1000.0, dtype=np.float32)  # "cortex"
    mask = np.zeros(values.shape, dtype=bool)
    mask[2:7, 2:7, 2:7] = True
    values[mask] = 50.0
    smoothed = smoothed_inside(values, mask, [1.5, 1.5, 1.5])
    assert smoothed.shape == (125,)
    assert smoothed == pytest.approx(50.0, rel=1e-5)


# --- gates --------------------------------------------------------------------------------------


def test_gates_are_one_table():
    names = [g.name for g in GATES]
    assert len(names) == len(set(names)) == 9
    bimodality = next(g for g in GATES if g.name == "suv_bimodality_max")
    assert bimodality.passes(0.5) and not bimodality.passes(0.555)
    assert Gate("x", 0.35, 0.5).passes(0.5) and not Gate("x", 0.35, 0.5).passes(0.34)
    assert not Gate("x", None, 1.0).passes(math.nan)
    assert Gate("x", 0.08, None).rule() == ">= 0.08"


# --- registered PET -----------------------------------------------------------------------------


def _image(array: np.ndarray, spacing, origin) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_registered_pet_puts_the_hot_spot_on_the_ct():
    # Generator convention: pet(p) = anatomy(T(p)), T = PET world -> CT world. A spot at CT-world
    # point q shows in the PET at T^-1(q) = q - translation (pure translation here).
    ct = _image(np.zeros((20, 32, 32), np.float32), (4.0, 4.0, 5.0), (-62.0, -62.0, 0.0))
    q = np.array([10.0, -6.0, 45.0])  # a voxel centre of the CT
    translation = np.array([10.0, -12.0, 10.0])
    pet_array = np.zeros((30, 24, 24), np.float32)
    pet = _image(pet_array, (6.0, 6.0, 5.0), (-66.0, -66.0, -25.0))
    spot = pet.TransformPhysicalPointToIndex(tuple(q - translation))
    assert np.allclose(pet.TransformIndexToPhysicalPoint(spot), q - translation)  # a PET centre
    pet_array[spot[2], spot[1], spot[0]] = 100.0
    pet = _image(pet_array, (6.0, 6.0, 5.0), (-66.0, -66.0, -25.0))
    motion = {"center": [0.0, 0.0, 50.0], "angles_rad": [0, 0, 0], "translation_mm": translation}
    moved = sitk.GetArrayFromImage(register_pet(pet, ct, motion))
    peak = np.unravel_index(np.argmax(moved), moved.shape)[::-1]
    assert np.allclose(ct.TransformIndexToPhysicalPoint([int(i) for i in peak]), q, atol=1e-6)
    assert moved.max() == pytest.approx(100.0, rel=1e-4)


# --- in-memory cohort ---------------------------------------------------------------------------


def _volumes(pid: str, seed: int) -> PatientVolumes:
    """A block of marrow in three regions; ABM is the hotter, denser half along x."""
    rng = np.random.default_rng(seed)
    shape = (12, 16, 16)
    marrow = np.zeros(shape, np.uint8)
    marrow[2:10, 2:14, 2:14] = 1
    marrow[5:10, 2:14, 2:14] = 2
    marrow[8:10, 2:14, 2:14] = 3
    abm = np.zeros(shape, bool)
    abm[:, :, 8:] = True
    label = np.where(abm, marrow, 0).astype(np.uint8)
    hu = np.where(marrow > 0, 100.0 + 60.0 * abm, 600.0) + rng.normal(0, 40, shape)
    suv = np.where(marrow > 0, 1.0 + 1.5 * abm, 0.5) + rng.normal(0, 0.1, shape)
    ceiling = np.where(marrow > 0, np.where(abm, 0.8, 0.2), 0.0)
    return PatientVolumes(pid, hu, suv, label, marrow, ceiling, (2.0, 2.0, 3.0))


def test_cohort_report_in_memory():
    results = [measure_patient(_volumes(f"P{k}", k)) for k in range(4)]
    report = cohort_report(results)
    table = report.table
    assert list(table.columns) == list(PATIENT_COLUMNS)
    assert table["abm_share"].to_list() == pytest.approx([0.5] * 4)
    assert table["dice_ceiling_mean"].to_list() == pytest.approx([1.0] * 4)
    assert table["dice_pet_threshold_mean"].min() > 0.95
    assert table["dice_all_marrow_mean"].to_list() == pytest.approx([2 / 3] * 4)
    assert table["hu_auc"].min() > 0.75
    # logistic: trained on P0, P2; scored on P1, P3 (position separates the classes)
    assert table["dice_logistic_mean"].isna().to_list() == [True, False, True, False]
    assert table["dice_logistic_mean"].iloc[[1, 3]].min() > 0.95
    figures = {f["name"]: f for f in report.figures}
    assert figures["n_patients"]["value"] == 4
    assert figures["logistic_scored_patients"]["value"] == 2
    assert figures["dice_logistic"]["value"] == pytest.approx(
        table["dice_logistic_mean"].iloc[[1, 3]].mean()
    )
    assert 100 < figures["hu_threshold"]["value"] < 160
    assert figures["dice_best_trivial"]["passed"] is False  # this toy is far too easy
    assert figures["hu_threshold"]["passed"] is None


def test_cohort_report_of_one_patient_has_no_logistic_score():
    report = cohort_report([measure_patient(_volumes("P0", 0))])
    figures = {f["name"]: f for f in report.figures}
    assert math.isnan(figures["dice_logistic"]["value"])
    assert math.isnan(figures["hu_suv_r"]["value"]) and figures["hu_suv_r"]["passed"] is False
    assert figures["dice_best_trivial"]["value"] == pytest.approx(
        max(figures["dice_all_marrow"]["value"], figures["dice_hu_threshold"]["value"])
    )


# --- files and the command ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_cohort(tmp_path_factory) -> Path:
    from abmseg.synth import generate_cohort

    root = tmp_path_factory.mktemp("synth_report")
    generate_cohort(root, 2, seed=5, preset="tiny")  # writes marrow and ceiling_prob itself
    return root


def test_cli_writes_the_report(report_cohort, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["synth-report", str(report_cohort), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "abm_share_mean" in printed and "gates" in printed

    table = pd.read_csv(out / "synth_report.tsv", sep="\t")
    assert list(table.columns) == list(PATIENT_COLUMNS)
    assert table["patient_id"].to_list() == ["SYN001", "SYN002"]
    assert table["dice_logistic_mean"].isna().to_list() == [True, False]
    assert table["dice_all_marrow_mean"].notna().all()
    # the PET is registered the right way round: its threshold finds the PET-defined label
    assert table["dice_pet_threshold_mean"].min() > 0.8
    assert table["hu_auc"].between(0.5, 1.0).all()
    # read back through the pipeline's readers, the generator's own truth files give its numbers
    for row in table.itertuples():
        truth = json.loads((report_cohort / row.patient_id / "truth.json").read_text())
        assert row.abm_share == pytest.approx(truth["abm_share"], rel=1e-5)
        assert row.dice_ceiling_mean == pytest.approx(truth["ceiling_dice"]["mean"], rel=1e-5)
        log_suv = truth["marrow"]["log_suv"]
        within = 1 - log_suv["var_hidden_field"] / log_suv["var_total_within"]
        assert row.ct_visible_r2 == pytest.approx(within, rel=1e-5)

    summary = pd.read_csv(out / "synth_summary.tsv", sep="\t", keep_default_na=False)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    gated = summary[summary["passed"] != ""]
    assert sorted(gated["name"]) == sorted(g.name for g in GATES)
    assert set(gated["passed"]) <= {"true", "false"}

    data = json.loads((out / "synth_summary.json").read_text())
    assert [f["name"] for f in data["figures"]] == summary["name"].to_list()
    assert data["gates_passed"] == (set(gated["passed"]) == {"true"})
    assert not (report_cohort / "synth_report.tsv").exists()


def test_cli_check_fails_on_a_failed_gate(report_cohort, tmp_path, capsys):
    # Two patients cannot meet the patient-level correlation gate (r is +-1 or undefined).
    assert main(["synth-report", str(report_cohort), "--out", str(tmp_path), "--check"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_not_a_synth_cohort_is_one_clear_line(report_cohort, tmp_path, capsys):
    assert main(["synth-report", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "no patients.tsv" in error and len(error.strip().splitlines()) == 1

    copy = tmp_path / "old"
    shutil.copytree(report_cohort, copy)
    (copy / "SYN002" / "ceiling_prob.nii.gz").unlink()
    assert main(["synth-report", str(copy)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "patient SYN002" in error and "ceiling_prob.nii.gz" in error
    assert "abmseg synth" in error and "regenerate" in error


def test_errors_are_the_project_types(tmp_path):
    from abmseg.synth.report import synth_report

    with pytest.raises(SheetError):
        synth_report(tmp_path)
    with pytest.raises(PatientDataError):
        from abmseg.synth.report import _check_truth_files

        _check_truth_files(tmp_path, ["SYN001"])
