"""The study's own checks on hand-made cases: the provenance leakage check catches a planted
leak, the shuffled control, the sampler points, the ceiling's labels and the goal lines."""

from __future__ import annotations

import numpy as np
import pytest

from abmseg.study.ceiling import ceiling_labels
from abmseg.study.leakage import centre_to_shape, leaks_in_lineage, shuffled_control
from abmseg.study.plan import StudyPlan, onestep_start, sweep_points
from abmseg.study.summary import goals, sampler_goal

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def _lineage(tmp_path, patients, raw):
    return {
        "jobs": [
            {"rule": "normalise", "wildcards": {"patient": p}} for p in patients
        ] + [{"rule": "train_stage1", "wildcards": {"variant": "full"}}],
        "raw": [{"path": str(tmp_path / path)} for path in raw],
    }  # fmt: skip


def test_a_clean_lineage_has_no_leak(tmp_path):
    lineage = _lineage(tmp_path, ["P1", "P2"], ["P1/CT/a.dcm", "P2/label.nii.gz"])
    test_raw = [tmp_path / "P3" / "CT", tmp_path / "P3" / "PET", tmp_path / "P3/label.nii.gz"]
    assert leaks_in_lineage(lineage, ["P3"], test_raw) == []


def test_a_planted_leak_is_caught_by_job_and_by_raw_file(tmp_path):
    test_raw = [tmp_path / "P3" / "CT", tmp_path / "P3/label.nii.gz"]
    by_job = _lineage(tmp_path, ["P1", "P3"], ["P1/CT/a.dcm"])
    assert leaks_in_lineage(by_job, ["P3"], test_raw) == ["job normalise of test patient P3"]
    by_file = _lineage(tmp_path, ["P1"], ["P1/CT/a.dcm", "P3/CT/x.dcm", "P3/label.nii.gz"])
    found = leaks_in_lineage(by_file, ["P3"], test_raw)
    assert len(found) == 2 and all("P3" in line for line in found)
    # a folder whose name only starts like a test patient's is not theirs
    lookalike = _lineage(tmp_path, ["P1"], ["P3x/CT/a.dcm"])
    assert leaks_in_lineage(lookalike, ["P3"], test_raw) == []


def test_centre_to_shape_crops_and_pads_about_the_centre():
    a = np.arange(5)[None, None, :] * np.ones((1, 1, 1), int)
    assert centre_to_shape(a, (1, 1, 3)).ravel().tolist() == [1, 2, 3]
    assert centre_to_shape(a, (1, 1, 7)).ravel().tolist() == [0, 0, 1, 2, 3, 4, 0]


def test_the_shuffled_control_scores_against_the_next_patients_label():
    one = np.zeros((2, 4, 4), np.uint8)
    one[:, :2] = 1
    two = np.zeros((2, 4, 4), np.uint8)
    two[:, 2:] = 2
    rows = shuffled_control({"A": one, "B": two}, {"A": one, "B": two}, REGIONS)
    assert [(r["patient_id"], r["label_of"]) for r in rows] == [("A", "B"), ("B", "A")]
    # own label: perfect on every region (region 2 and 3 absent on both sides count 1.0)
    assert rows[0]["dice_own"] == 1.0
    # A's prediction (region 1 only) against B's label (region 2 only): regions 1, 2 score 0,
    # region 3 (absent on both) 1 -> mean 1/3
    assert rows[0]["dice_shuffled"] == pytest.approx(1 / 3)


def test_sampler_points_and_their_parsing():
    from abmseg.study.sampler import SamplerPoint

    names = sweep_points([1, 10], [250], onestep_start(0.5), ddpm=True)
    assert names == [
        "ddim-1-T",
        "ddim-10-T",
        "ddim-1-best",
        "ddim-10-best",
        "ddim-10-250",
        "ddim-1-250",
        "pseudo",
        "ddpm-1000-T",
    ]  # fmt: skip (ddim-10-250 appears once)
    for name in names:
        assert SamplerPoint.parse(name).name == name
    with pytest.raises(ValueError, match="ddim-<steps>-<start>"):
        SamplerPoint.parse("ddim-ten-T")
    plan = StudyPlan.from_config({"study": {"enabled": True}, "variants": ["ct_only"]})
    assert plan.sampler_points({"variants": ["ct_only"]}) == []  # no full model: no sweep
    assert plan.methods(["full"])[0] == "full" and "ceiling" in plan.methods(["full"])
    assert StudyPlan().methods(["full"]) == ["full"]  # study off: the variants only


def test_ceiling_labels_take_the_marrow_region_where_the_probability_reaches_a_half():
    probability = np.array([0.2, 0.5, 0.9, 0.9])
    marrow = np.array([1, 2, 3, 0], np.uint8)
    assert ceiling_labels(probability, marrow).tolist() == [0, 2, 3, 0]


def _pair(b, delta, low, high):
    return {"a": "full", "b": b, "delta_dice_mean": delta, "ci_low": low, "ci_high": high}


def test_goal_lines_use_the_paired_ci_and_say_met_missed_or_leakage():
    ablation = {
        "ct_only": {"dice_mean": 0.60},
        "full": {"dice_mean": 0.70},
        "all_marrow": {"dice_mean": 0.62},
        "ceiling": {"dice_mean": 0.66},
    }
    paired = [
        _pair("ct_only", 0.10, 0.04, 0.15),
        _pair("all_marrow", 0.08, -0.01, 0.16),  # large but its CI crosses 0
        _pair("ceiling", 0.04, 0.01, 0.07),
    ]
    lines = goals(ablation, paired)
    assert lines[0].startswith("full beats ct_only") and ": met" in lines[0]
    assert "all_marrow" in lines[1] and ": missed" in lines[1]
    assert "LEAKAGE SUSPECTED" in lines[2]
    within = goals(ablation, [_pair("ceiling", 0.015, 0.001, 0.03)])
    assert "within the 0.02 margin" in within[-1]
    unmeasured = goals({"full": {"dice_mean": float("nan")}, "ceiling": {"dice_mean": 0.7}}, [])
    assert "not measured" in unmeasured[-1]  # a NaN never reads as met


def test_the_sampler_goal_reads_only_the_series_fixed_in_advance():
    rows = [
        {"sampler": "ddim", "steps": 1, "start_step": 250, "start": "250", "dice_mean": 0.80,
         "seconds_per_patient": 1.0},  # a candidate start: not chosen in advance, ignored
        {"sampler": "ddim", "steps": 5, "start_step": 250, "start": "best", "dice_mean": 0.695,
         "seconds_per_patient": 3.0},
        {"sampler": "ddim", "steps": 50, "start_step": 1000, "start": "T", "dice_mean": 0.70,
         "seconds_per_patient": 20.0},
        {"sampler": "ddim", "steps": 10, "start_step": 1000, "start": "T",
         "dice_mean": float("nan"), "seconds_per_patient": 4.0},
    ]  # fmt: skip
    assert "5 steps from t = 250" in sampler_goal(rows)
