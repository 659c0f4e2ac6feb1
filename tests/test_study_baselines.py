"""Trivial CT/PET baselines of the study: bone interior, region atlas, fit on training only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abmseg.study.baselines import (
    BASELINE_METHODS,
    BaselineModels,
    BaselineVolumes,
    RegionAtlas,
    bone_interior,
    fit_baselines,
    predict_baseline,
)

SPACING = (4.0, 2.0, 2.0)  # 4 mm^2 pixels
CORTEX_FREE = {"cortex_hu": 250.0, "marrow_max_hu": 250.0}  # the inside of a cortical ring


def _box_ct(lo: int, hi: int, shape=(4, 30, 30), inside_hu: float = 40.0) -> np.ndarray:
    """Soft tissue (0 HU) with a one-voxel cortex wall (1000 HU) on rows/columns lo and hi."""
    hu = np.zeros(shape, dtype=np.float32)
    hu[:, lo : hi + 1, lo : hi + 1] = 1000.0
    hu[:, lo + 1 : hi, lo + 1 : hi] = inside_hu
    return hu


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    values = []
    for r in (1, 2, 3):
        p, t = pred == r, truth == r
        if p.any() or t.any():
            values.append(2.0 * np.count_nonzero(p & t) / (p.sum() + t.sum()))
    return float(np.mean(values))


# --- bone_interior ------------------------------------------------------------------------------


def test_small_box_is_filled_exactly():
    hu = _box_ct(5, 11)  # inside 5 x 5 px = 100 mm^2
    inside = np.zeros(hu.shape, dtype=bool)
    inside[:, 6:11, 6:11] = True
    np.testing.assert_array_equal(bone_interior(hu, SPACING, **CORTEX_FREE), inside)
    # Default: the whole filled bone (shell + inside), nothing outside it.
    box = np.zeros(hu.shape, dtype=bool)
    box[:, 5:12, 5:12] = True
    np.testing.assert_array_equal(bone_interior(hu, SPACING), box)


def test_gap_in_the_cortex_is_closed():
    hu = _box_ct(5, 11)
    hu[:, 5, 8] = 0.0  # a one-pixel gap in the wall
    got = bone_interior(hu, SPACING, **CORTEX_FREE)
    assert got[:, 6:11, 6:11].all()  # without sealing, the inside joins the outside: no hole
    assert got.sum() <= hu.shape[0] * (25 + 3)  # the inside, the gap, at most a bit beyond


def test_large_ring_cavity_is_not_marrow():
    hu = _box_ct(1, 28)  # inside 26 x 26 px = 2704 mm^2 > 2500
    assert not bone_interior(hu, SPACING, **CORTEX_FREE).any()
    default = bone_interior(hu, SPACING)
    assert not default[:, 4:26, 4:26].any()  # the cavity stays out, the ring is bone
    assert default[hu >= 250].all()
    # With a larger cap the same cavity would be filled: the cap is what keeps it out.
    assert bone_interior(hu, SPACING, max_hole_mm2=3000.0, **CORTEX_FREE)[:, 2:28, 2:28].all()


def test_bone_interior_rejects_2d():
    with pytest.raises(ValueError, match="volume"):
        bone_interior(np.zeros((5, 5)), SPACING)


# --- region atlas -------------------------------------------------------------------------------


def _layout(shape, box, widths_regions):
    """Interior = ``box`` (slices); label columns across x: (width, region or 0) in order."""
    interior = np.zeros(shape, dtype=bool)
    interior[box] = True
    label = np.zeros(shape, dtype=np.uint8)
    x = box[2].start
    for width, region in widths_regions:
        label[box[0], box[1], x : x + width] = region
        x += width
    return interior, label


def test_atlas_assigns_regions_by_position():
    interior, label = _layout(
        (6, 10, 20), np.s_[1:5, 2:8, 4:16], [(4, 2), (4, 1), (4, 3)]
    )  # left ilium, middle spine, right lower pelvis
    atlas = RegionAtlas.fit([(interior, label)], bins=3)
    # A test patient of another size and place: the layout follows the normalised position.
    other = np.zeros((8, 20, 40), dtype=bool)
    other[2:8, 3:18, 5:35] = True
    got = atlas.assign(other)
    assert (got[~other] == 0).all()
    np.testing.assert_array_equal(np.unique(got[:, :, 5:15][other[:, :, 5:15]]), [2])
    np.testing.assert_array_equal(np.unique(got[:, :, 15:25][other[:, :, 15:25]]), [1])
    np.testing.assert_array_equal(np.unique(got[:, :, 25:35][other[:, :, 25:35]]), [3])


def test_atlas_fills_empty_bins_from_the_nearest():
    interior, label = _layout(
        (4, 4, 16), np.s_[0:4, 0:4, 0:16], [(4, 2), (8, 0), (4, 3)]
    )  # ABM only in the outer x bins
    atlas = RegionAtlas.fit([(interior, label)], bins=4)
    assert atlas.counts[:, :, 1:3].sum() == 0
    table = atlas.table
    np.testing.assert_array_equal(np.unique(table[:, :, :2]), [2])
    np.testing.assert_array_equal(np.unique(table[:, :, 2:]), [3])
    again = RegionAtlas.from_dict(json.loads(json.dumps(atlas.to_dict())))
    np.testing.assert_array_equal(again.assign(interior), atlas.assign(interior))


def test_atlas_without_label_is_refused():
    interior = np.ones((2, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="no label voxel"):
        RegionAtlas.fit([(interior, np.zeros((2, 3, 3), np.uint8))], bins=2)


# --- fitting on training patients ---------------------------------------------------------------


def _patient(name, seed, abm_hu=60.0, other_hu=-40.0, pet=True, lo=5, hi=26):
    """Cortex box; inside, the left half is ABM (region 1) with ``abm_hu``, the rest not."""
    rng = np.random.default_rng(seed)
    hu = _box_ct(lo, hi)
    label = np.zeros(hu.shape, dtype=np.uint8)
    mid = (lo + hi) // 2
    hu[:, lo + 1 : hi, lo + 1 : mid] = abm_hu
    hu[:, lo + 1 : hi, mid:hi] = other_hu
    label[:, lo + 1 : hi, lo + 1 : mid] = 1
    hu[:, lo + 1 : hi, lo + 1 : hi] += rng.normal(0, 3, hu[:, lo + 1 : hi, lo + 1 : hi].shape)
    suv = None
    if pet:
        suv = np.where(label > 0, 3.0, 1.0) + rng.normal(0, 0.1, hu.shape)
        suv = suv.astype(np.float32)
    return BaselineVolumes(name, hu, suv, label, SPACING)


def test_hu_threshold_recovers_planted_cut():
    models = fit_baselines([_patient("A", 1), _patient("B", 2)], **CORTEX_FREE)
    assert models.hu_sign == 1.0
    assert -40.0 < models.hu_threshold < 60.0
    assert models.training_dice["hu_threshold"] > 0.99
    # Half the interior is not ABM (regions 2 and 3, absent and not predicted, score 1).
    assert models.training_dice["all_marrow"] < models.training_dice["hu_threshold"] - 0.1
    c = _patient("C", 3)
    pred = predict_baseline(models, "hu_threshold", c.hu, c.spacing_zyx)
    assert _dice(pred, c.label) > 0.99
    every = predict_baseline(models, "all_marrow", c.hu, c.spacing_zyx)
    np.testing.assert_array_equal(every > 0, bone_interior(c.hu, SPACING, **CORTEX_FREE))


def test_fit_uses_training_patients_only():
    a, b = _patient("A", 1), _patient("B", 2)
    c = _patient("C", 3, abm_hu=-150.0, other_hu=-250.0)  # a test patient unlike the others
    first = fit_baselines([a, b], **CORTEX_FREE)
    predict_baseline(first, "logistic", c.hu, c.spacing_zyx)
    second = fit_baselines([a, b], **CORTEX_FREE)
    assert first.to_dict() == second.to_dict()
    assert first.training_patients == ("A", "B")
    # Were C among the training patients, the numbers would move: the check can fail.
    leaked = fit_baselines([a, b, c], **CORTEX_FREE)
    assert leaked.hu_threshold != first.hu_threshold


def test_logistic_separates_position_and_hu():
    def striped(name, seed):
        v = _patient(name, seed, abm_hu=40.0, other_hu=40.0, lo=3, hi=26)
        hu, label = v.hu.copy(), np.zeros_like(v.label)
        rng = np.random.default_rng(seed)
        for y in range(4, 26):
            value = 60.0 if (y // 4) % 2 == 0 else -40.0
            hu[:, y, 4:26] = value + rng.normal(0, 3, hu[:, y, 4:26].shape)
            if value > 0:
                label[:, y, 4:15] = 1  # ABM = high HU in the left half only
        return BaselineVolumes(name, hu, None, label, SPACING)

    models = fit_baselines([striped("A", 1), striped("B", 2)], **CORTEX_FREE)
    assert models.pet_threshold is None
    assert models.training_dice["logistic"] > 0.95
    assert models.training_dice["hu_threshold"] < 0.92  # HU alone takes the right half too
    c = striped("C", 3)
    assert _dice(predict_baseline(models, "logistic", c.hu, SPACING), c.label) > 0.9
    with pytest.raises(ValueError, match="not fitted"):
        predict_baseline(models, "pet_threshold", c.hu, SPACING, pet=np.ones_like(c.hu))


def test_pet_threshold_recovers_planted_suv_cut():
    flat = {"abm_hu": 40.0, "other_hu": 40.0}  # the CT cannot tell ABM here, the PET can
    models = fit_baselines([_patient("A", 1, **flat), _patient("B", 2, **flat)], **CORTEX_FREE)
    assert 1.0 < models.pet_threshold < 3.0
    assert models.training_dice["pet_threshold"] > 0.99
    assert models.training_dice["hu_threshold"] < 0.9
    c = _patient("C", 3, **flat)
    assert _dice(predict_baseline(models, "pet_threshold", c.hu, SPACING, c.pet), c.label) > 0.99


def test_round_trip_gives_identical_predictions():
    models = fit_baselines([_patient("A", 1), _patient("B", 2)])  # default (filled bone) mode
    text = json.dumps(models.to_dict())
    again = BaselineModels.from_dict(json.loads(text))
    assert again.to_dict() == models.to_dict()
    c = _patient("C", 3)
    for method in BASELINE_METHODS:
        got = predict_baseline(again, method, c.hu, SPACING, c.pet)
        assert got.dtype == np.uint8 and got.shape == c.hu.shape
        np.testing.assert_array_equal(got, predict_baseline(models, method, c.hu, SPACING, c.pet))


def test_bad_method_and_missing_pet_raise():
    models = fit_baselines([_patient("A", 1), _patient("B", 2)], **CORTEX_FREE)
    c = _patient("C", 3)
    with pytest.raises(ValueError, match="unknown baseline method"):
        predict_baseline(models, "random_forest", c.hu, SPACING)
    with pytest.raises(ValueError, match="needs the patient's PET"):
        predict_baseline(models, "pet_threshold", c.hu, SPACING)
