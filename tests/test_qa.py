"""The QA package: CT measurements against hand-made volumes, the training profile's ranges,
the pass / warn / fail rules on hand-set profiles, and the per-region statistics against counts
done by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from abmseg.qa.checks import QaSettings, assess
from abmseg.qa.cohort import cohort_tables
from abmseg.qa.measure import CtMeasurements, histogram_peak, measure_ct
from abmseg.qa.patient import in_lps, marrow_on_scan_edge
from abmseg.qa.profile import (
    TrainingProfile,
    at_scan_edge,
    region_volumes_ml,
    summarise,
    value_range,
)
from abmseg.qa.stats import marrow_mean_entropy, region_statistics, stats_tsv

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def body_ct(shift: float = 0.0, slices: int = 20, thickness: float = 5.0) -> sitk.Image:
    """Air around an elliptic body: a fat rim (-100 HU) round muscle (40 HU), a bone (700 HU)
    and a metal-free pelvis; Gaussian noise of 10 HU; every value moved by ``shift``."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:slices, :64, :64]
    r = ((y - 32) / 26.0) ** 2 + ((x - 32) / 30.0) ** 2
    hu = np.full(r.shape, -1000.0)
    hu[r < 1.0] = -100.0
    hu[r < 0.55] = 40.0
    hu[(np.abs(y - 40) < 3) & (np.abs(x - 32) < 3)] = 700.0
    hu += rng.normal(0, 10, hu.shape) + shift
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((2.0, 2.0, thickness))
    return image


def test_histogram_peak_finds_the_mode_inside_its_window():
    values = np.concatenate([np.full(500, -997.0), np.full(300, -102.0), np.full(2000, 40.0)])
    assert histogram_peak(values, (-1200, -500)) == pytest.approx(-997.5)
    assert histogram_peak(values, (-300, 0)) == pytest.approx(-102.5)
    assert histogram_peak(values, (200, 400)) is None  # nothing there


def test_measure_ct_reads_the_peaks_geometry_and_metal():
    m = measure_ct(body_ct())
    assert m.air_peak_hu == pytest.approx(-1000, abs=5)
    assert m.fat_peak_hu == pytest.approx(-100, abs=5)
    assert (m.slice_thickness_mm, m.pixel_mm, m.scan_length_mm) == (5.0, 2.0, 100.0)
    assert m.metal_ml == 0.0


def test_a_shifted_ct_moves_both_peaks_by_the_shift():
    clean, shifted = measure_ct(body_ct()), measure_ct(body_ct(shift=200))
    assert shifted.air_peak_hu - clean.air_peak_hu == pytest.approx(200, abs=5)
    # the fat window follows the air peak, so the fat is still found, 200 HU higher
    assert shifted.fat_peak_hu - clean.fat_peak_hu == pytest.approx(200, abs=5)


def test_metal_volume_is_counted_in_ml():
    ct = body_ct()
    hu = sitk.GetArrayFromImage(ct)
    hu[5:7, 30:35, 30:35] = 3000  # 2 x 5 x 5 voxels of 2 x 2 x 5 mm = 1 ml
    metal = sitk.GetImageFromArray(hu)
    metal.CopyInformation(ct)
    assert measure_ct(metal).metal_ml == pytest.approx(1.0)


def test_value_range_and_profile_of_hand_made_patients():
    assert value_range([3.0, None, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert value_range([None]) is None
    ms = [CtMeasurements(-1000.0, -100.0, 5.0, 1.0, 300.0, 0.0),
          CtMeasurements(-990.0, None, 3.0, 0.9, 250.0, 0.5)]  # fmt: skip
    volumes = [{"lumbosacral_spine": 10.0, "ilium": 20.0, "lower_pelvis": 5.0},
               {"lumbosacral_spine": 30.0, "ilium": 10.0, "lower_pelvis": 7.0}]  # fmt: skip
    profile = summarise(ms, volumes, REGIONS)
    assert profile.patients == 2
    assert profile.ct["fat_peak_hu"] == {"min": -100.0, "median": -100.0, "max": -100.0}
    assert profile.ct["slice_thickness_mm"] == {"min": 3.0, "median": 4.0, "max": 5.0}
    assert profile.region_volume_ml["ilium"] == {"min": 10.0, "median": 15.0, "max": 20.0}
    assert TrainingProfile.from_dict(profile.to_dict()) == profile


def test_region_volumes_in_ml():
    label = np.zeros((2, 10, 10), np.uint8)
    label[0, :5, :4] = 1  # 20 voxels of 2 x 2 x 5 mm = 0.4 ml
    assert region_volumes_ml(label, (2.0, 2.0, 5.0), REGIONS) == {
        "lumbosacral_spine": pytest.approx(0.4), "ilium": 0.0, "lower_pelvis": 0.0,
    }  # fmt: skip


def profile_of(**ct) -> TrainingProfile:
    def span(lo, hi):
        return {"min": lo, "median": (lo + hi) / 2, "max": hi}

    base = {
        "air_peak_hu": span(-1005, -995), "fat_peak_hu": span(-110, -90),
        "slice_thickness_mm": span(3, 6), "pixel_mm": span(0.8, 1.2),
        "scan_length_mm": span(240, 300), "metal_ml": span(0, 0),
    }  # fmt: skip
    base.update(ct)
    volumes = {name: span(10.0, 20.0) for name in REGIONS}
    return TrainingProfile(10, base, volumes)


CLEAN = CtMeasurements(-1000.0, -100.0, 5.0, 1.0, 260.0, 0.0)
VOLUMES = {name: 15.0 for name in REGIONS}


def checks_fired(result) -> dict[str, str]:
    return {r["check"]: r["level"] for r in result["reasons"]}


def test_a_clean_patient_passes():
    result = assess(CLEAN, VOLUMES, 0.2, profile_of(), QaSettings())
    assert result["verdict"] == "pass" and result["reasons"] == []


@pytest.mark.parametrize(
    ("changes", "check", "level"),
    [
        ({"air_peak_hu": -800.0, "fat_peak_hu": 100.0}, "hu_calibration", "fail"),
        ({"fat_peak_hu": -30.0}, "hu_calibration", "fail"),
        ({"slice_thickness_mm": 10.0}, "geometry", "fail"),
        ({"pixel_mm": 0.4}, "geometry", "fail"),
        ({"scan_length_mm": 150.0}, "field_of_view", "fail"),
        ({"metal_ml": 5.0}, "metal", "warn"),
    ],
)
def test_each_input_fault_fires_its_check(changes, check, level):
    ct = CtMeasurements(**{**CLEAN.to_dict(), **changes})
    result = assess(ct, VOLUMES, 0.2, profile_of(), QaSettings())
    assert checks_fired(result) == {check: level}
    assert result["verdict"] == level


def test_limits_are_inclusive_of_their_tolerance():
    # 45 HU outside the air range is within the 50 HU tolerance; 9 mm is 6 x 1.5
    ct = CtMeasurements(-1050.0, -100.0, 9.0, 1.0, 180.0, 1.0)
    assert assess(ct, VOLUMES, 0.2, profile_of(), QaSettings())["verdict"] == "pass"


def test_output_checks_warn_on_volume_and_uncertainty():
    volumes = {**VOLUMES, "lower_pelvis": 0.0, "ilium": 45.0}
    result = assess(CLEAN, volumes, 0.9, profile_of(), QaSettings())
    assert result["verdict"] == "warn"
    messages = [r["message"] for r in result["reasons"]]
    assert [r["check"] for r in result["reasons"]] == ["region_volume"] * 2 + ["uncertainty"]
    assert any(m.startswith("lower_pelvis ABM 0.0 ml") for m in messages)
    assert any(m.startswith("ilium ABM 45.0 ml") for m in messages)


def test_without_a_profile_the_input_is_not_judged_and_that_is_said():
    result = assess(CLEAN, VOLUMES, 0.2, None, QaSettings())
    assert checks_fired(result) == {"training_profile": "warn"}


def test_qa_settings_come_from_the_config_and_reject_unknown_keys():
    assert QaSettings.from_config({"qa": {"hu_tolerance": 80}}).hu_tolerance == 80
    assert QaSettings.from_config({}) == QaSettings()
    with pytest.raises(Exception, match="qa"):
        QaSettings.from_config({"qa": {"hu_tolerence": 80}})


def test_region_statistics_against_hand_counts():
    shape = (2, 4, 4)
    hu = np.full(shape, 40.0)  # soft tissue: no bone interior at all
    labels = np.zeros(shape, np.uint8)
    labels[0, 0, :2] = 1  # two voxels of region 1
    probabilities = np.zeros((4, *shape), np.float32)
    probabilities[0] = 1.0
    entropy = np.zeros(shape, np.float32)
    entropy[0, 0, 0] = 0.8  # one of the two is uncertain
    mi = np.full(shape, 0.1, np.float32)
    spet = np.full(shape, 2.0, np.float32)
    spet[0, 0, 1] = 4.0
    rows = region_statistics(
        "P1", hu, (5.0, 2.0, 2.0), labels, probabilities, spet, entropy, mi, REGIONS, 0.5
    )
    spine = rows[0]
    assert spine["abm_volume_ml"] == pytest.approx(0.04)  # 2 x 20 mm^3
    assert spine["bone_interior_ml"] == pytest.approx(0.04)  # the ABM counts as interior
    assert spine["abm_share_of_interior"] == pytest.approx(1.0)
    assert spine["mean_spet_suv"] == pytest.approx(3.0)
    assert spine["mean_entropy"] == pytest.approx(0.4)
    assert spine["uncertain_share"] == pytest.approx(0.5)
    assert rows[1]["abm_volume_ml"] == 0.0 and rows[1]["mean_hu"] is None
    assert marrow_mean_entropy(labels, entropy) == pytest.approx(0.4)
    table = stats_tsv(rows).splitlines()
    assert table[0].split("\t")[:3] == ["patient_id", "region", "abm_volume_ml"]
    assert table[2].split("\t")[5] == ""  # no ilium ABM: no mean HU


def test_bone_interior_is_split_by_the_most_probable_region():
    shape = (1, 12, 12)
    hu = np.full(shape, 40.0)
    hu[0, 2:10, 2:10] = 700.0  # a bone with a marrow cavity
    hu[0, 4:8, 4:8] = 100.0
    probabilities = np.zeros((4, *shape), np.float32)
    probabilities[0] = 0.7
    probabilities[2] = 0.2  # ilium more likely than the others everywhere
    probabilities[1] = 0.1
    labels = np.zeros(shape, np.uint8)
    labels[0, 5, 5] = 2
    entropy = np.zeros(shape, np.float32)
    rows = region_statistics(
        "P1", hu, (1.0, 1.0, 1.0), labels, probabilities, None, entropy, entropy, REGIONS, 0.5
    )
    ilium = rows[1]
    assert ilium["bone_interior_ml"] == pytest.approx(64 / 1000)  # the whole filled bone
    assert ilium["abm_share_of_interior"] == pytest.approx(1 / 64)
    assert rows[0]["bone_interior_ml"] == 0.0 and rows[0]["abm_share_of_interior"] is None
    assert ilium["mean_spet_suv"] is None  # no sPET


def test_cohort_tables_put_the_verdict_beside_each_row(tmp_path):
    import json

    row = {"patient_id": "P1", "region": "ilium", "abm_volume_ml": 2.0}
    stats = {"patient_id": "P1", "marrow_mean_entropy": 0.3, "regions": [row]}
    qa = {"verdict": "warn", "reasons": [{"check": "metal", "level": "warn", "message": "m"}]}
    (tmp_path / "s.json").write_text(json.dumps(stats))
    (tmp_path / "q.json").write_text(json.dumps(qa))
    by_region, by_patient = cohort_tables(["full"], [tmp_path / "s.json"], [tmp_path / "q.json"])
    assert by_region.loc[0, ["source", "region", "qa_verdict"]].tolist() == [
        "full", "ilium", "warn",
    ]  # fmt: skip
    assert by_patient.loc[0, ["checks", "reasons"]].tolist() == ["metal", "warn: m"]


def test_metal_is_judged_without_a_profile_too():
    metal = CtMeasurements(**{**CLEAN.to_dict(), "metal_ml": 5.0})
    assert checks_fired(assess(metal, VOLUMES, 0.2, None, QaSettings())) == {
        "training_profile": "warn", "metal": "warn",
    }  # fmt: skip


def test_marrow_on_the_scan_edge_warns_only_where_training_labels_kept_off_it():
    roomy = dataclasses.replace(profile_of(), label_at_edge=0.0)
    tight = dataclasses.replace(profile_of(), label_at_edge=0.9)  # the phantoms' scans are tight
    edge = assess(CLEAN, VOLUMES, 0.2, roomy, QaSettings(), marrow_at_edge=True)
    assert checks_fired(edge) == {"field_of_view": "warn"}
    assert assess(CLEAN, VOLUMES, 0.2, tight, QaSettings(), marrow_at_edge=True)["reasons"] == []
    assert assess(CLEAN, VOLUMES, 0.2, roomy, QaSettings())["reasons"] == []


def test_the_profile_counts_labels_on_the_scan_edge():
    inside, on_edge = np.zeros((4, 3, 3), np.uint8), np.zeros((4, 3, 3), np.uint8)
    inside[1:3] = 1
    on_edge[-1, 0, 0] = 2
    assert (at_scan_edge(inside), at_scan_edge(on_edge)) == (False, True)
    ms = [CLEAN] * 4
    profile = summarise(ms, [VOLUMES] * 4, REGIONS, [True, False, False, False])
    assert profile.label_at_edge == 0.25
    assert TrainingProfile.from_dict(profile.to_dict()) == profile


def test_marrow_on_scan_edge_reads_the_box():
    labels = np.zeros((3, 2, 2), np.uint8)
    labels[0, 0, 0] = 1
    box = {"x": [0, 2], "y": [0, 2], "z": [0, 3]}
    assert marrow_on_scan_edge(labels, box, slices=3)
    assert not marrow_on_scan_edge(labels, {**box, "z": [2, 5]}, slices=9)  # crop starts above


def test_a_feet_first_grid_is_turned_head_up_for_the_picture():
    """The same anatomy stored head-first (z up) and feet-first (slice 0 at the head, z axis
    pointing to the feet) comes out as one array after in_lps."""
    head_first = sitk.Image(4, 3, 5, sitk.sitkFloat32)
    head_first.SetSpacing((1.0, 1.0, 3.0))
    feet_first = sitk.Image(4, 3, 5, sitk.sitkFloat32)
    feet_first.SetSpacing((1.0, 1.0, 3.0))
    feet_first.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    feet_first.SetOrigin((0.0, 0.0, 12.0))  # its slice 0 is the head-first grid's slice 4
    anatomy = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    (up,), spacing = in_lps(head_first, anatomy)
    (turned,), _ = in_lps(feet_first, anatomy[::-1].copy())
    np.testing.assert_array_equal(turned, up)
    assert spacing == (3.0, 1.0, 1.0)


def test_bone_interior_counts_only_the_slices_the_region_s_abm_spans():
    shape = (4, 12, 12)
    hu = np.full(shape, 40.0)
    hu[:, 2:10, 2:10] = 700.0  # one bone through all four slices
    hu[:, 4:8, 4:8] = 100.0
    probabilities = np.zeros((4, *shape), np.float32)
    probabilities[0], probabilities[2] = 0.7, 0.3  # ilium everywhere the bone is
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 5, 5] = 2  # ilium ABM on slices 1-2 only
    entropy = np.zeros(shape, np.float32)
    rows = region_statistics(
        "P1", hu, (1.0, 1.0, 1.0), labels, probabilities, None, entropy, entropy, REGIONS, 0.5
    )
    assert rows[1]["bone_interior_ml"] == pytest.approx(2 * 64 / 1000)  # slices 1-2, not 0-3
