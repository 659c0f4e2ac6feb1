"""The study's paired statistics and tables, against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from abmseg.study.stats import paired_bootstrap, paired_comparison, wilcoxon_p
from abmseg.study.tables import (
    ABLATION_COLUMNS,
    PAIRED_COLUMNS,
    PER_PATIENT_COLUMNS,
    SAMPLER_COLUMNS,
    ablation_rows,
    paired_rows,
    per_patient_rows,
    read_tsv,
    sampler_rows,
    study_pairs,
    write_tsv,
)


def random_pairs(n: int = 30, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.8, 0.05, n)
    b = a - rng.normal(0.02, 0.03, n)
    return a, b


# --- paired_bootstrap ---------------------------------------------------------------------


def test_constant_differences_give_a_zero_width_interval_at_the_constant():
    b = np.array([0.5, 0.25, 0.75, 0.625, 0.375])
    mean, low, high = paired_bootstrap(b + 0.125, b)
    assert mean == pytest.approx(0.125, abs=1e-12)
    assert low == pytest.approx(0.125, abs=1e-12)
    assert high == pytest.approx(0.125, abs=1e-12)


def test_bootstrap_mean_is_the_closed_form_mean_difference():
    a, b = random_pairs(17, seed=4)
    mean, low, high = paired_bootstrap(a, b, resamples=200)
    assert mean == pytest.approx(sum(a) / len(a) - sum(b) / len(b), abs=1e-12)
    assert low < mean < high


def test_interval_agrees_with_scipy_percentile_bootstrap():
    a, b = random_pairs(30)
    _, low, high = paired_bootstrap(a, b, resamples=10_000, seed=0)
    ref = stats.bootstrap(
        (a - b,),
        np.mean,
        confidence_level=0.95,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.01)
    assert high == pytest.approx(ref.high, abs=0.01)


def test_interval_matches_a_plain_loop_bootstrap_with_the_same_draws():
    a, b = random_pairs(12, seed=7)
    diff = list(a - b)
    rng = np.random.default_rng(3)
    index = rng.integers(0, len(diff), size=(500, len(diff)))
    means = sorted(sum(diff[i] for i in row) / len(row) for row in index)

    def percentile(q: float) -> float:  # numpy's default "linear" definition, by hand
        pos = q * (len(means) - 1)
        lo = math.floor(pos)
        return means[lo] + (pos - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])

    _, low, high = paired_bootstrap(a, b, resamples=500, seed=3, level=0.9)
    assert low == pytest.approx(percentile(0.05), abs=1e-12)
    assert high == pytest.approx(percentile(0.95), abs=1e-12)


def test_bootstrap_is_reproducible_for_a_seed_and_changes_with_another():
    a, b = random_pairs(20)
    assert paired_bootstrap(a, b, resamples=1000, seed=5) == paired_bootstrap(
        a, b, resamples=1000, seed=5
    )
    first = paired_bootstrap(a, b, resamples=1000, seed=5)
    other = paired_bootstrap(a, b, resamples=1000, seed=6)
    assert first[0] == other[0]
    assert first[1:] != other[1:]


def test_nan_pairs_are_dropped_and_n_counts_complete_pairs():
    a = [0.9, np.nan, 0.7, 0.8, 0.6]
    b = [0.8, 0.5, np.nan, 0.6, 0.3]
    mean, low, high = paired_bootstrap(a, b, resamples=500)
    assert mean == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert 0.1 - 1e-12 <= low <= high <= 0.3 + 1e-12
    row = paired_comparison("x", "y", a, b, resamples=500)
    assert list(row) == PAIRED_COLUMNS
    assert row["n"] == 3
    assert row["delta_dice_mean"] == pytest.approx(0.2)


def test_fewer_than_two_pairs_give_no_interval():
    mean, low, high = paired_bootstrap([0.9, np.nan], [0.7, 0.1])
    assert mean == pytest.approx(0.2)
    assert math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in paired_bootstrap([], []))


# --- wilcoxon_p ---------------------------------------------------------------------------


def exact_signed_rank_p(diff: np.ndarray) -> float:
    """Two-sided exact signed-rank p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(diff))
    r_plus = ranks[diff > 0].sum()
    t = min(r_plus, ranks.sum() - r_plus)
    totals = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=len(ranks))
    ]
    return min(1.0, 2 * sum(total <= t for total in totals) / len(totals))


def test_wilcoxon_all_positive_n5_is_the_exact_two_over_two_to_the_five():
    a = [0.91, 0.82, 0.73, 0.64, 0.55]
    b = [0.90, 0.80, 0.70, 0.60, 0.50]
    assert wilcoxon_p(a, b) == pytest.approx(2 / 2**5)


def test_wilcoxon_agrees_with_enumeration_and_scipy_on_a_random_case():
    a, b = random_pairs(10, seed=11)
    p = wilcoxon_p(a, b)
    assert p == pytest.approx(exact_signed_rank_p(a - b))
    assert p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    a, b = random_pairs(30, seed=12)
    assert wilcoxon_p(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_wilcoxon_is_nan_without_two_nonzero_differences():
    assert math.isnan(wilcoxon_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]))
    assert math.isnan(wilcoxon_p([0.5, 0.6, 0.8], [0.5, 0.6, 0.7]))
    assert math.isnan(paired_comparison("x", "y", [0.5, 0.6], [0.5, 0.6])["p_wilcoxon"])


def test_wilcoxon_drops_nan_pairs():
    a = [0.91, 0.82, np.nan, 0.73, 0.64, 0.55]
    b = [0.90, 0.80, 0.10, 0.70, 0.60, 0.50]
    assert wilcoxon_p(a, b) == pytest.approx(0.0625)


# --- tables -------------------------------------------------------------------------------


def record(pid, spine, ilium, pelvis, mean, assd, synthesis="absent", ilium_assd=9.0):
    rec = {
        "patient_id": pid,
        "variant": "x",
        "segmentation": {
            "lumbosacral_spine": {"dice": spine, "assd_mm": 9.0},
            "ilium": {"dice": ilium, "assd_mm": ilium_assd},
            "lower_pelvis": {"dice": pelvis, "assd_mm": 9.0},
            "mean": {"dice": mean, "assd_mm": assd},
        },
    }
    if synthesis != "absent":
        rec["synthesis"] = synthesis
    return rec


def syn(psnr, ssim, nmse):
    return {"psnr_db": psnr, "ssim": ssim, "nmse": nmse, "mae": 123.0}


RECORDS = {
    "full": [
        record("SYN003", 0.7, 0.7, 0.4, 0.6, math.inf, syn(28.0, 0.85, 0.02)),
        record("SYN001", 0.9, 0.8, 0.7, 0.8, 1.0, syn(30.0, 0.90, 0.01)),
        record("SYN002", 0.8, 0.6, 0.7, 0.7, 3.0, syn(26.0, 0.80, 0.03)),
    ],
    "ct_only": [
        record("SYN002", 0.5, 0.5, 0.5, 0.5, 6.0, None),
        record("SYN001", 0.6, 0.5, 0.4, 0.5, 4.0),
        record("SYN003", 0.4, 0.2, 0.3, 0.3, math.nan, None, ilium_assd=math.nan),
    ],
}


def test_per_patient_rows_are_exact_and_ordered():
    rows = per_patient_rows(RECORDS)
    assert [list(r) for r in rows] == [PER_PATIENT_COLUMNS] * 6
    assert [(r["method"], r["patient_id"]) for r in rows] == [
        ("full", "SYN001"),
        ("full", "SYN002"),
        ("full", "SYN003"),
        ("ct_only", "SYN001"),
        ("ct_only", "SYN002"),
        ("ct_only", "SYN003"),
    ]
    assert rows[0] == {
        "method": "full",
        "patient_id": "SYN001",
        "dice_spine": 0.9,
        "dice_ilium": 0.8,
        "dice_lower_pelvis": 0.7,
        "dice_mean": 0.8,
        "assd_mean": 1.0,
    }
    assert rows[2]["assd_mean"] == math.inf
    assert math.isnan(rows[5]["assd_mean"])


def test_ablation_rows_are_exact_means_over_finite_values():
    full, ct = ablation_rows(RECORDS)
    assert list(full)[: len(ABLATION_COLUMNS)] == ABLATION_COLUMNS
    # the (patient, region) pairs without an ASSD are counted, not silently dropped
    assert (full["assd_undefined"], full["assd_pairs"]) == (0, 9)
    assert (ct["assd_undefined"], ct["assd_pairs"]) == (1, 9)
    # full: spine (0.9+0.8+0.7)/3, ilium (0.8+0.6+0.7)/3, pelvis (0.7+0.7+0.4)/3,
    # mean Dice 0.8, 0.7, 0.6 -> 0.7, sd sqrt((0.01+0+0.01)/2) = 0.1; ASSD inf left out -> 2.0
    expected_full = {
        "method": "full",
        "n": 3,
        "dice_spine": 0.8,
        "dice_ilium": 0.7,
        "dice_lower_pelvis": 0.6,
        "dice_mean": 0.7,
        "dice_mean_sd": 0.1,
        "assd_mean": 2.0,
        "psnr": 28.0,
        "ssim": 0.85,
        "nmse": 0.02,
    }
    assert {k: full[k] for k in expected_full} == pytest.approx(expected_full)
    # ct_only: mean Dice 0.5, 0.5, 0.3 -> 1.3/3; deviations 0.2/3, 0.2/3, -0.4/3
    # -> sd sqrt((0.04 + 0.04 + 0.16) / 9 / 2); ASSD nan left out -> 5.0; no synthesis
    expected_ct = {
        "method": "ct_only",
        "n": 3,
        "dice_spine": 0.5,
        "dice_ilium": 0.4,
        "dice_lower_pelvis": 0.4,
        "dice_mean": 1.3 / 3,
        "dice_mean_sd": math.sqrt(0.24 / 18),
        "assd_mean": 5.0,
    }
    assert {k: ct[k] for k in expected_ct} == pytest.approx(expected_ct)
    assert ct["psnr"] is None and ct["ssim"] is None and ct["nmse"] is None


def test_written_tables_have_the_exact_header_and_empty_synthesis_fields(tmp_path):
    path = tmp_path / "sub" / "ablation.tsv"
    write_tsv(path, ablation_rows(RECORDS), ABLATION_COLUMNS)
    lines = path.read_text().splitlines()
    assert lines[0] == "\t".join(ABLATION_COLUMNS)
    assert len(lines) == 3
    full, ct = (line.split("\t") for line in lines[1:])
    assert full[:2] == ["full", "3"] and full[-3:] == ["28", "0.85", "0.02"]
    assert ct[:2] == ["ct_only", "3"] and ct[-3:] == ["", "", ""]
    assert ct[ABLATION_COLUMNS.index("dice_mean")] == f"{1.3 / 3:.6g}" == "0.433333"
    back = read_tsv(path)
    assert [r["method"] for r in back] == ["full", "ct_only"]
    assert back[1]["psnr"] == ""
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left behind


def test_written_per_patient_table_keeps_inf_and_nan(tmp_path):
    path = tmp_path / "per_patient.tsv"
    write_tsv(path, per_patient_rows(RECORDS), PER_PATIENT_COLUMNS)
    back = read_tsv(path)
    assert path.read_text().splitlines()[0] == "\t".join(PER_PATIENT_COLUMNS)
    assert [r["assd_mean"] for r in back] == ["1", "3", "inf", "4", "6", "nan"]
    assert back[0]["dice_spine"] == "0.9"


def test_write_tsv_refuses_a_row_missing_a_column(tmp_path):
    with pytest.raises(KeyError):
        write_tsv(tmp_path / "t.tsv", [{"a": 1}], ["a", "b"])
    assert not (tmp_path / "t.tsv").exists()


def test_paired_rows_match_on_patient_id_only(tmp_path):
    rows = per_patient_rows(RECORDS)
    rows.append({"method": "full", "patient_id": "SYN009", "dice_mean": 0.1})
    (result,) = paired_rows(rows, [("full", "ct_only")], resamples=500)
    assert list(result) == PAIRED_COLUMNS
    assert result["n"] == 3
    # differences 0.8-0.5, 0.7-0.5, 0.6-0.3
    assert result["delta_dice_mean"] == pytest.approx(0.8 / 3)
    assert 0.2 - 1e-12 <= result["ci_low"] <= result["ci_high"] <= 0.3 + 1e-12
    # the same table read back from disk gives the same comparison
    path = tmp_path / "pp.tsv"
    write_tsv(path, rows[:-1], PER_PATIENT_COLUMNS)
    (again,) = paired_rows(read_tsv(path), [("full", "ct_only")], resamples=500)
    assert again["delta_dice_mean"] == pytest.approx(result["delta_dice_mean"], abs=1e-6)


def test_study_pairs_has_no_duplicates_and_full_vs_ct_only_once():
    methods = ["full", "ct_only", "nnunet", "no_attention", "no_pet"]
    variants = ["full", "ct_only", "no_attention", "no_pet"]
    pairs = study_pairs(methods, variants)
    assert len(pairs) == len(set(pairs))
    assert pairs.count(("full", "ct_only")) == 1
    assert pairs == [
        ("full", "ct_only"),
        ("full", "nnunet"),
        ("full", "no_attention"),
        ("full", "no_pet"),
        ("no_attention", "ct_only"),
        ("no_pet", "ct_only"),
    ]


def test_study_pairs_skips_absent_methods():
    assert study_pairs(["nnunet", "no_pet"], ["no_pet"]) == []
    assert study_pairs(["full", "nnunet"], []) == [("full", "nnunet")]


def test_sampler_rows_are_means_over_patients(tmp_path):
    points = [
        {
            "sampler": "ddim",
            "steps": 50,
            "start_step": 700,
            "patients": [
                {"patient_id": "SYN001", "dice_mean": 0.8, "psnr": 30.0, "seconds": 10.0},
                {"patient_id": "SYN002", "dice_mean": 0.6, "psnr": 26.0, "seconds": 14.0},
            ],
        },
        {
            "sampler": "ddpm",
            "steps": None,
            "start_step": "full",
            "patients": [{"patient_id": "SYN001", "dice_mean": 0.7, "psnr": 27.0, "seconds": 5}],
        },
    ]
    rows = sampler_rows(points)
    assert [list(r)[: len(SAMPLER_COLUMNS)] for r in rows] == [SAMPLER_COLUMNS] * 2
    assert {k: rows[0][k] for k in SAMPLER_COLUMNS} == pytest.approx(
        {
            "sampler": "ddim",
            "steps": 50,
            "start_step": 700,
            "dice_mean": 0.7,
            "psnr": 28.0,
            "seconds_per_patient": 12.0,
        }
    )
    path = tmp_path / "sampler.tsv"
    write_tsv(path, rows, SAMPLER_COLUMNS)
    assert path.read_text().splitlines() == [
        "\t".join(SAMPLER_COLUMNS),
        "ddim\t50\t700\t0.7\t28\t12",
        "ddpm\t\tfull\t0.7\t27\t5",
    ]


def test_summary_table_says_how_many_regions_had_no_assd():
    from abmseg.study.summary import markdown

    text = markdown(ablation_rows(RECORDS), [], [], None, None)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "|" in line}
    assert "| no ASSD |" in rows["method"]
    # full: every region scored (0 of 9); ct_only: SYN003's ilium has none (1 of 9)
    assert " | 0/9 | " in rows["full"] and " | 1/9 | " in rows["ct_only"]
