"""Every loss column a training run writes has a plain name, the plot's legends use it, and the
report's glossary (workflow/report/losses.rst) lists each one."""

from __future__ import annotations

import csv

import pytest
from conftest import REPO

from abmseg.train.loss_glossary import LOSS_TERMS, loss_label
from abmseg.train.progress import LEADING, TRAILING


def test_the_report_glossary_names_every_term():
    caption = (REPO / "workflow" / "report" / "losses.rst").read_text()
    for term, (name, meaning) in LOSS_TERMS.items():
        assert f"``{term}``: **{name}**, {meaning}." in caption, term


def test_labels_are_plain_names_and_unknown_terms_pass_through():
    assert loss_label("d_ct_fake") == "CT critic on pseudo-CT"
    assert loss_label("diff_w_ct") == "diffusion CT-guidance weight"
    assert loss_label("not_a_term") == "not_a_term"
    names = [name for name, _ in LOSS_TERMS.values()]
    assert len(set(names)) == len(names)  # one legend entry cannot stand for two terms


@pytest.mark.slow
def test_every_column_of_a_real_run_has_a_plain_name(pipeline):
    """The shared run's losses.csv of both stages: each loss column is in the glossary."""
    models = pipeline["work"] / "results" / "models" / "full"
    seen = set()
    for stage in ("stage1", "stage2"):
        with (models / stage / "losses.csv").open() as handle:
            header = next(csv.reader(handle))
        seen.update(c for c in header if c not in LEADING + TRAILING)
    assert {"seg_total", "gan_pet", "d_ct_fake", "diff_total"} <= seen
    assert sorted(seen - set(LOSS_TERMS)) == []
