"""The train/test split: hash-stable per patient, 7:3 in expectation, overridable."""

import hashlib
import random

import pandas as pd

from abmseg.cohort.plan import CohortPlan
from abmseg.cohort.split import TEST, TRAIN, VALIDATION, assign_split, hash_unit, write_split

SALT = "abmseg-split-v1"


def _ids(n, start=0):
    return [f"P{i:04d}" for i in range(start, start + n)]


def test_hash_unit_matches_sha256_reference():
    # Independent reference: first 8 bytes of sha256("salt\0id") as a big-endian fraction.
    digest = hashlib.sha256(b"s\x00P0001").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    assert hash_unit("P0001", "s") == expected
    assert 0.0 <= hash_unit("P0001", "s") < 1.0


def test_adding_patients_never_moves_existing_ones():
    first = assign_split(_ids(253), 0.7, SALT)
    second = assign_split(_ids(253) + _ids(50, start=253), 0.7, SALT)
    assert len(second) == 303
    moved = [pid for pid, side in first.items() if second[pid] != side]
    assert moved == []
    assert set(first.values()) == {TRAIN, TEST}


def test_removing_and_reordering_patients_changes_nothing():
    ids = _ids(253)
    full = assign_split(ids, 0.7, SALT)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    reordered = assign_split(shuffled, 0.7, SALT)
    assert reordered == full
    subset = shuffled[::3]
    partial = assign_split(subset, 0.7, SALT)
    assert partial == {pid: full[pid] for pid in subset}


def test_training_fraction_is_close_to_seventy_percent():
    rng = random.Random(12345)
    ids = {f"{rng.getrandbits(64):016x}" for _ in range(2000)}
    assert len(ids) == 2000
    assignment = assign_split(sorted(ids), 0.7, SALT)
    fraction = sum(side == TRAIN for side in assignment.values()) / len(assignment)
    assert abs(fraction - 0.7) <= 0.03


def test_fraction_extremes():
    ids = _ids(100)
    assert set(assign_split(ids, 1.0, SALT).values()) == {TRAIN}
    assert set(assign_split(ids, 0.0, SALT).values()) == {TEST}


def test_overrides_win_over_the_hash():
    ids = _ids(200)
    plain = assign_split(ids, 0.7, SALT)
    a_train = next(pid for pid in ids if plain[pid] == TRAIN)
    a_test = next(pid for pid in ids if plain[pid] == TEST)
    overrides = {a_train: TEST, a_test: TRAIN}
    result = assign_split(ids, 0.7, SALT, overrides)
    assert result[a_train] == TEST
    assert result[a_test] == TRAIN
    others = {pid: side for pid, side in result.items() if pid not in overrides}
    assert others == {pid: plain[pid] for pid in others}


def test_empty_override_falls_back_to_hash():
    ids = _ids(20)
    plain = assign_split(ids, 0.7, SALT)
    assert assign_split(ids, 0.7, SALT, {pid: "" for pid in ids}) == plain


def test_different_salt_gives_a_different_split():
    ids = _ids(253)
    a = assign_split(ids, 0.7, SALT)
    b = assign_split(ids, 0.7, "another-salt")
    differing = sum(a[pid] != b[pid] for pid in ids)
    # Independent uniform hashes disagree for ~2*0.7*0.3 = 42 % of patients.
    assert differing > 50


def test_write_split_writes_tsv_in_order(tmp_path):
    ids = ["Z9", "001", "A_1", "b-2"]
    assignment = {"Z9": TRAIN, "001": TEST, "A_1": TEST, "b-2": TRAIN}
    out = tmp_path / "sub" / "split.tsv"
    write_split(assignment, out)
    text = out.read_text()
    assert text.splitlines()[0] == "patient_id\tsubset"
    assert text.endswith("\n")
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert list(table.columns) == ["patient_id", "subset"]
    assert list(table.patient_id) == ids
    assert list(table.subset) == [assignment[pid] for pid in ids]
    assert [p.name for p in out.parent.iterdir()] == ["split.tsv"]


def test_validation_is_a_stable_share_of_the_training_side_only():
    """A second hash picks ~15 % of the training side; test patients never move, adding
    patients moves no one, and without a validation fraction nothing is held out."""
    ids = _ids(2000)
    plain = assign_split(ids, 0.7, SALT)
    held = assign_split(ids, 0.7, SALT, validation_fraction=0.15)
    assert {pid for pid in ids if held[pid] == TEST} == {pid for pid in ids if plain[pid] == TEST}
    training_side = [pid for pid in ids if plain[pid] == TRAIN]
    share = sum(held[pid] == VALIDATION for pid in training_side) / len(training_side)
    assert abs(share - 0.15) <= 0.03
    # independent reference: the documented hash of salt + "\0validation"
    expected = {pid for pid in training_side if hash_unit(pid, SALT + "\0validation") < 0.15}
    assert {pid for pid in ids if held[pid] == VALIDATION} == expected
    grown = assign_split(ids + _ids(300, start=2000), 0.7, SALT, validation_fraction=0.15)
    assert all(grown[pid] == held[pid] for pid in ids)
    assert VALIDATION not in plain.values()


def test_sheet_overrides_for_validation():
    ids = _ids(200)
    held = assign_split(ids, 0.7, SALT, validation_fraction=0.15)
    a_test = next(pid for pid in ids if held[pid] == TEST)
    a_validation = next(pid for pid in ids if held[pid] == VALIDATION)
    overrides = {a_test: VALIDATION, a_validation: TRAIN}
    result = assign_split(ids, 0.7, SALT, overrides, validation_fraction=0.15)
    assert result[a_test] == VALIDATION
    # 'train' is the training side: the validation hash still decides there
    assert result[a_validation] == VALIDATION


def test_plan_fits_on_the_training_side_less_validation_and_refuses_nothing_to_fit():
    sheet = pd.DataFrame(
        {"patient_id": ["A", "B", "C", "D"], "split": ["train", "validation", "test", ""]}
    ).set_index("patient_id", drop=False)
    plan = CohortPlan(list(sheet.index), ["A", "B", "C"], ["D"], {"A": TRAIN,
                      "B": VALIDATION, "C": TEST})  # fmt: skip
    assert (plan.train, plan.fit, plan.validation, plan.test) == (["A", "B"], ["A"], ["B"], ["C"])
    assert plan.split_problem() is None
    only_validation = CohortPlan(["B", "C"], ["B", "C"], [], {"B": VALIDATION, "C": TEST})
    problem = only_validation.split_problem()
    assert "held out for validation" in problem and "split.validation_fraction" in problem
